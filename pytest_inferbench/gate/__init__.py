"""Baseline comparison and performance gating, above the run files: the statistics and the
verdict rules themselves are core/ (verdicts.py, thresholds.py), shared with paired mode.

    compare.py     stored-baseline comparison of two run documents: matching cells by their
                   resolved configuration, learnt A/A noise, hardware/version mismatch, and
                   the verdict table (also `python -m pytest_inferbench compare`)
    baselines.py   saved baselines: names, `latest`, paths, the noise summary saved with one
    session.py     the session's gate: which baseline, the verdicts, the exit status
"""
