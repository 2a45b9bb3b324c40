"""A new run against a cell's history: the run-to-run noise learnt from the earlier runs
themselves, robustly, so one new run gets an interval with as many degrees of freedom as the
history has runs.

    past  earlier runs on this machine fingerprint, since the last change point (at most
          `window`), one observation per run (the geometric mean of a run's repeats)
    new   this run's observation(s)

Runs more than 3.5 robust sd (1.4826 x MAD of the logs, at least 1%) from the median are set
aside (said in the verdict): one bad night neither widens nor narrows the noise. Then, on the log scale,
s = sd of the kept runs (never below their own sampling error), the interval is Student t
with k - 1 degrees of freedom on mean(new) - mean(past), se = s * sqrt(1/k + 1/M): a
prediction interval for M = 1. Verdicts, thresholds and the Holm correction are the stored
comparison's (core/verdicts.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.verdicts import Judgement, Obs, is_latency
from .changes import Change, segments
from .defaults import MIN_RUNS, WINDOW

OUTLIER_Z = 3.5
MAD_TO_SD = 1.4826
MIN_SPREAD = 0.01           # log scale: runs within 3.5% of the median are never set aside


@dataclass
class Reference:
    """Which earlier runs a new run is judged against, and why those."""
    indices: list[int]          # into the series given to reference()
    note: str                   # for the verdict: where the window starts
    short_by: int = 0           # runs still needed (0: enough)


def reference(n: int, changes: Sequence[Change], window: int = WINDOW,
              min_runs: int = MIN_RUNS) -> Reference:
    """The earlier runs to judge against: those since the last change point. A level that
    has not yet lasted `min_runs` runs is still judged against the level before it, so a
    regression keeps being reported until it is the new normal (and listed as a change)."""
    if n == 0:
        return Reference([], "no earlier runs", min_runs)
    segs = segments(n, changes)
    chosen, note = segs[-1], ""
    if len(chosen) < min_runs and len(segs) > 1:
        chosen = segs[-2]
        note = (f"; the change at run {segs[-1].start + 1} of {n} has lasted "
                f"{len(segs[-1])} run{'s' if len(segs[-1]) != 1 else ''}: judged against the "
                f"level before it")
    elif len(segs) > 1:
        note = f"; since the change at run {chosen.start + 1} of {n}"
    idx = list(chosen)[-window:]
    short = max(0, min_runs - len(idx))
    return Reference(idx, note, short)


def history_judgement(metric: str, limit: float, past: Sequence[Obs], new: Sequence[Obs],
                      min_runs: int = MIN_RUNS, where: str = "") -> Judgement:
    sign = 1 if is_latency(metric) else -1
    b = [o for o in past if _usable(o)]
    n = [o for o in new if _usable(o)]
    if not n:
        return Judgement(metric, limit, math.nan, math.inf,
                         missing=f"{metric} was not measured in this run")
    if len(b) < min_runs:
        need = min_runs - len(b)
        return Judgement(metric, limit, math.nan, math.inf, missing=(
            f"{metric}: the history has {len(b)} run{'s' if len(b) != 1 else ''} of this cell "
            f"on this machine{where}; history mode needs at least {min_runs} ({need} more)"))
    lb = np.log([o.value for o in b])
    ln = np.log([o.value for o in n])
    med = float(np.median(lb))
    # the robust sd, never below MIN_SPREAD: on very steady runs the MAD is tiny, and a run
    # 1% off would otherwise count as an outlier
    spread = max(MAD_TO_SD * float(np.median(np.abs(lb - med))), MIN_SPREAD)
    keep = np.abs(lb - med) <= OUTLIER_Z * spread
    set_aside = int((~keep).sum())
    kept = lb[keep]
    k = len(kept)
    sd2 = float(kept.var(ddof=1)) if k > 1 else 0.0
    sampling = [o.se_log ** 2 for o in b + n if math.isfinite(o.se_log)]
    s2 = max(sd2, float(np.mean(sampling)) if sampling else 0.0)
    se = math.sqrt(s2 * (1 / k + 1 / len(n)))
    worse = sign * float(ln.mean() - kept.mean())
    sd_pct = 100 * math.expm1(math.sqrt(s2))
    aside = (f", {set_aside} outlier run{'s' if set_aside != 1 else ''} set aside"
             if set_aside else "")
    detail = {"history_runs": len(b), "used_runs": k, "outliers": set_aside,
              "aa_sd": round(math.expm1(math.sqrt(s2)), 6),
              "base_mean": float(f"{math.exp(kept.mean()):.6g}"),
              "new": [float(f"{o.value:.6g}") for o in n]}
    return Judgement(metric, limit, worse, se, df=max(1, k - 1), detail=detail,
                     noise=f"noise learnt from {k} earlier runs{where}{aside}: run-to-run sd "
                           f"±{sd_pct:.1f}%")


def _usable(o: Obs) -> bool:
    return o.value is not None and o.value > 0 and math.isfinite(o.value)
