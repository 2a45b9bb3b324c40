"""Which earlier runs history mode judges a cell against (the job's `baseline` section)."""

from __future__ import annotations

from dataclasses import dataclass

from ..history.defaults import MIN_RUNS, WINDOW


@dataclass
class HistoryOptions:
    window: int = WINDOW          # at most this many earlier runs (since the last change)
    min_runs: int = MIN_RUNS      # fewer: the cell is not judged, and says how many it needs
    branch: str | None = None     # only runs of this git branch (None: every branch)
