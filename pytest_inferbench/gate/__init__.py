"""Baseline comparison and performance gating: pure statistics and verdicts (no pytest, no
pandas), shared by the plugin's session gate, paired A/B cells and `python -m pytest_inferbench
compare`.

    thresholds.py   the gate's thresholds ("+10%", "-5%"), confidence and assumed noise
    stats.py        judgements of log ratios: intervals, p-values, Holm, the verdict rules;
                    the paired estimate (Student t, with a bootstrap cross-check)
    compare.py      stored-baseline comparison of two run documents: matching cells by their
                    resolved configuration, learnt A/A noise, hardware/version mismatch, and the
                    verdict table
"""
