"""MLPerf LoadGen's early-stopping rule for latency SLOs (server scenario).

With h queries within the latency bound and t over it, the run may claim "p-th percentile <=
bound" at confidence c when P[at most t of h + t queries exceed the bound | the true fraction
over it is 1 - p + d] < 1 - c, i.e. BetaRegularized(p - d, h, 1 + t) < 1 - c (LoadGen's
odds(h, t, p, d)). min_passing_queries gives the least h for a given t; e.g. p = 0.99,
c = 0.99, d = 0: 459 queries with none over, 662 in all with one over.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def odds(h: int, t: int, p: float, d: float = 0.0) -> float:
    if h <= 0:
        return 1.0
    from scipy.special import betainc  # lazy: scipy costs ~0.1 s at pytest start
    return float(betainc(h, 1 + t, p - d))


@lru_cache(maxsize=4096)
def min_passing_queries(t: int, p: float, c: float = 0.99, d: float = 0.0) -> int:
    """Least number of within-bound queries h with odds(h, t, p, d) < 1 - c."""
    lo, hi = 1, 64
    while odds(hi, t, p, d) >= 1 - c:
        lo, hi = hi, hi * 2
    while lo < hi:                 # odds decreases with h: binary search the first passing h
        mid = (lo + hi) // 2
        if odds(mid, t, p, d) < 1 - c:
            hi = mid
        else:
            lo = mid + 1
    return lo


def verdict(latencies_ns: np.ndarray, bound_ns: int, percentile: float,
            confidence: float = 0.99, tolerance: float = 0.0) -> dict:
    """SLO verdict: 'pass' when early stopping proves it, 'fail' when the observed percentile is
    over the bound, 'undetermined' (with the queries a verdict needs) when too few queries."""
    p = percentile / 100.0
    n = int(len(latencies_ns))
    over = int(np.count_nonzero(latencies_ns > bound_ns))
    within = n - over
    needed_h = min_passing_queries(over, p, confidence, tolerance)
    if n and over / n > 1 - p:
        state = "fail"
    elif within >= needed_h:
        state = "pass"
    else:
        state = "undetermined"
    return {"verdict": state, "percentile": percentile, "bound_ms": bound_ns / 1e6,
            "confidence": confidence, "queries": n, "overlatency": over,
            "queries_needed": needed_h + over}
