"""Performance history: baselines learnt from a cell's earlier runs and change points in its
series (Apache Otava's E-Divisive, vendored in otava/: see changes.py for why)."""
