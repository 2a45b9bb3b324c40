"""The stopping rule, written once for every load generator (docs/measurement.md): never
before `min_duration` (and, for the interval rule, `min_queries`); then stop when the target
percentile's confidence interval is within `ci_width` of it, or, where the caller judges a
verdict instead (a rate search's step), when `decide` proves it; always at `max_duration` or
`max_queries`, or once failed queries exceed the error budget. Generators ask `limit` (cheap)
as often as they like and `check` every CHECK_EVERY_NS."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..core.stats import rank, relative_half_width
from .failures import ErrorLog
from .samples import Progress

CHECK_EVERY_NS = 250_000_000    # consult the rule at most 4 times a second


class StoppingRule:
    def __init__(self, settings, target: float, min_s: float | None = None,
                 decide: Callable[..., bool] | None = None):
        self.settings, self.target, self.decide = settings, target, decide
        self.min_ns = int((settings.min_duration if min_s is None else min_s) * 1e9)
        self.max_ns = int(settings.max_duration * 1e9)
        self.max_queries = settings.max_queries

    def limit(self, elapsed_ns: int, n: int) -> str | None:
        """'max_queries' or 'max_duration' once reached, else None."""
        if self.max_queries is not None and n >= self.max_queries:
            return "max_queries"
        if elapsed_ns >= self.max_ns:
            return "max_duration"
        return None

    def check(self, elapsed_ns: int, lat_ns: np.ndarray, errors: ErrorLog,
              *evidence) -> str | None:
        """'errors', 'verdict' or 'ci_converged' when the run should stop now, else None.
        evidence: what `decide(lat_ns, *evidence)` judges besides the latencies (the open
        loop: how long unanswered queries have waited; generative steps: their records)."""
        s = self.settings
        if errors.budget_exceeded(len(lat_ns), s.max_error_rate):
            return "errors"
        if elapsed_ns < self.min_ns:
            return None
        if self.decide is not None:
            return "verdict" if self.decide(lat_ns, *evidence) else None
        if len(lat_ns) >= s.min_queries and self.half_width(lat_ns) <= s.ci_width:
            return "ci_converged"
        return None

    def half_width(self, lat_ns: np.ndarray) -> float:
        """The target percentile's interval half-width relative to it (inf: no queries)."""
        if not len(lat_ns):
            return float("inf")
        return relative_half_width(lat_ns, self.target, self.settings.confidence)


def show_progress(progress: Progress | None, elapsed_ns: int, lat_ns: np.ndarray) -> None:
    """The live line: elapsed seconds, queries, current p99 (ms)."""
    if progress is None or not len(lat_ns):
        return
    k = rank(len(lat_ns), 99) - 1
    progress(elapsed_ns / 1e9, len(lat_ns), float(np.partition(lat_ns, k)[k]) / 1e6)
