"""The noise of a cell measured several times (fresh processes or repeats), split by level
(Kalibera & Jones, ISMM 2013), and what a comparison at that noise can resolve.

Each run gives a value x_i (on the log scale) and the sampling error of that value from inside
the run, s_i (its percentile bounds: observe() in results/cells.py). Over N runs:

    total        var(x)                     what one run's value scatters by
    within       mean(s_i^2)                the part more queries per run would shrink
    between      max(0, var(x) - within)    the part only more runs (processes) shrink

The cell's value is the geometric mean of the runs, its interval Student t on the mean of the
logs with N - 1 degrees of freedom: it rests on the spread of the runs themselves, never on
pooled per-query values from a few processes treated as independent.

A stored comparison of N runs against N (gate/compare.py, core/verdicts.stored_judgement)
has the half-width h = t(2N - 2) * sd * sqrt(2 / N) on the log scale. "No change" needs the
interval below the threshold, so a threshold under h can never pass: it is below what the cell
can resolve, and `runs_to_resolve` says how many runs per side would bring h under it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .verdicts import quantile

MAX_RUNS = 200      # runs_to_resolve looks no further: beyond, say paired mode


@dataclass(frozen=True)
class NoiseSplit:
    runs: int
    value: float                # geometric mean of the runs
    lower: float                # its interval at `confidence`
    upper: float
    total_sd: float             # sd of the log values (a fraction, ~relative sd)
    within_sd: float            # root mean square sampling error of one run's value
    between_sd: float           # the rest: run-to-run (process-to-process) effect
    confidence: float = 0.95

    def resolution(self, runs: int | None = None) -> float:
        """The half-width of a comparison of `runs` runs against as many (default: this
        cell's), as a relative change (exp(h) - 1)."""
        return comparison_half_width(self.total_sd, runs or self.runs, self.confidence)

    def runs_to_resolve(self, limit: float) -> int | None:
        """Runs per side that bring the comparison's half-width under log(1 + limit); None
        beyond MAX_RUNS."""
        target = math.log1p(limit)
        for n in range(2, MAX_RUNS + 1):
            if math.log1p(comparison_half_width(self.total_sd, n, self.confidence)) < target:
                return n
        return None

    def to_json(self) -> dict:
        return {"runs": self.runs, "value": _g(self.value), "lower": _g(self.lower),
                "upper": _g(self.upper), "total_sd": _g(self.total_sd),
                "within_sd": _g(self.within_sd), "between_sd": _g(self.between_sd),
                "confidence": self.confidence, "resolution": _g(self.resolution())}


def split(values: Sequence[float], sampling_se: Sequence[float],
          confidence: float = 0.95) -> NoiseSplit | None:
    """The split of N >= 2 positive run values with their sampling errors (log scale; an
    infinite or unknown error counts as none known: 0). None with fewer than two runs."""
    pairs = [(v, s) for v, s in zip(values, sampling_se)
             if v is not None and v > 0 and math.isfinite(v)]
    if len(pairs) < 2:
        return None
    x = np.log([v for v, _ in pairs])
    within2 = float(np.mean([s * s if s is not None and math.isfinite(s) else 0.0
                             for _, s in pairs]))
    total2 = float(x.var(ddof=1))
    n = len(x)
    half = quantile((1 + confidence) / 2, n - 1) * math.sqrt(total2 / n)
    mean = float(x.mean())
    return NoiseSplit(runs=n, value=math.exp(mean), lower=math.exp(mean - half),
                      upper=math.exp(mean + half), total_sd=math.sqrt(total2),
                      within_sd=math.sqrt(within2),
                      between_sd=math.sqrt(max(0.0, total2 - within2)),
                      confidence=confidence)


def comparison_half_width(sd: float, runs: int, confidence: float = 0.95) -> float:
    """Relative half-width of a comparison of `runs` runs per side at log-scale sd `sd`."""
    if runs < 2:
        return math.inf
    h = quantile((1 + confidence) / 2, 2 * runs - 2) * sd * math.sqrt(2 / runs)
    return math.expm1(h)


def _g(x: float) -> float:
    return float(f"{x:.6g}") if math.isfinite(x) else x
