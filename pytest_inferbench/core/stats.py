"""Statistics of latency samples: one percentile definition, distribution-free bounds.

Percentile definition (documented in docs/measurement.md): the nearest-rank percentile, i.e. the
smallest sample x such that at least p% of the samples are <= x (numpy's 'inverted_cdf').
With n samples sorted ascending, p -> sample of 1-based rank ceil(p/100 * n).

Confidence bounds: the order statistics X_(l) <= X_(u) chosen from the binomial distribution of
the number of samples below the true quantile, so that P(X_(l) <= q_p <= X_(u)) >= confidence
for any continuous distribution (no normality assumed). With too few samples a side has no
bound (None): e.g. p99.9 from 100 samples has no upper bound.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np


def rank(n: int, p: float) -> int:
    """1-based rank of the nearest-rank p-th percentile among n samples (exact arithmetic)."""
    if n < 1:
        raise ValueError("no samples")
    r = math.ceil(Fraction(str(p)) * n / 100)
    return min(max(r, 1), n)


def load_lazy_parts() -> None:
    """Import now what the statistics import lazily (scipy.stats, scipy.special: ~0.4 s, the
    GIL held): called before a measured window, so that the stopping rule's first check never
    stalls the issuer inside it (a first open-loop cell of a session once lagged ~390 ms)."""
    import scipy.special  # noqa: F401
    import scipy.stats  # noqa: F401


@lru_cache(maxsize=4096)
def bound_ranks(n: int, p: float, confidence: float) -> tuple[int | None, int | None]:
    """1-based ranks (l, u) of a two-sided distribution-free confidence interval, None if unbounded."""
    alpha = (1.0 - confidence) / 2.0
    q = p / 100.0
    from scipy.stats import binom  # lazy: scipy.stats costs ~0.4 s at pytest start
    lo = int(binom.ppf(alpha, n, q))          # P(B <= lo - 1) < alpha
    hi = int(binom.ppf(1.0 - alpha, n, q)) + 1  # P(B <= hi - 1) >= 1 - alpha
    return (lo if lo >= 1 else None, hi if hi <= n else None)


def percentile(sorted_values: np.ndarray, p: float) -> float:
    return float(sorted_values[rank(len(sorted_values), p) - 1])


def percentile_with_bounds(sorted_values: np.ndarray, p: float, confidence: float):
    """(value, lower, upper) from an ascending array; a bound is None where n is too small."""
    n = len(sorted_values)
    lo, hi = bound_ranks(n, p, confidence)
    return (float(sorted_values[rank(n, p) - 1]),
            float(sorted_values[lo - 1]) if lo else None,
            float(sorted_values[hi - 1]) if hi else None)


def relative_half_width(values: np.ndarray, p: float, confidence: float) -> float:
    """Larger side of the CI of percentile p over the estimate (inf when a side is unbounded).

    Uses np.partition (linear time) so it can run while measuring without sorting everything.
    """
    n = len(values)
    if n == 0:
        return math.inf
    lo, hi = bound_ranks(n, p, confidence)
    if lo is None or hi is None:
        return math.inf
    k = rank(n, p)
    part = np.partition(values, sorted({lo - 1, k - 1, hi - 1}))
    est = float(part[k - 1])
    if est <= 0:
        return math.inf
    return max(est - float(part[lo - 1]), float(part[hi - 1]) - est) / est


def samples_needed(p: float, confidence: float, width: float | None = None) -> int:
    """Smallest n at which percentile p has both confidence bounds (ignores width)."""
    n = 1
    while True:
        lo, hi = bound_ranks(n, p, confidence)
        if lo is not None and hi is not None:
            return n
        n = n * 2 if n < 64 else int(n * 1.25)


RATE_SLICES = 10


def rate_interval(ends_ns: np.ndarray, confidence: float,
                  slices: int = RATE_SLICES) -> tuple[float, float] | None:
    """A throughput's interval as factors of its point value (low, high), by batch means:
    the window cut into `slices` equal spans, the completions in each one observation, a
    Student t interval on their mean. Consecutive queries are not independent (a slow
    stretch slows many), so per-query spread would claim far too much; spans do not see
    what changes between measurements minutes apart (paired mode does). None: too few."""
    ends = np.sort(np.asarray(ends_ns, dtype=np.int64))
    if len(ends) < 5 * slices or ends[-1] <= ends[0]:
        return None
    edges = np.linspace(ends[0], ends[-1], slices + 1)
    counts = np.histogram(ends, bins=edges)[0].astype(float)
    mean = counts.mean()
    if mean <= 0:
        return None
    from scipy.stats import t  # lazy: scipy.stats costs ~0.4 s at pytest start
    half = float(t.ppf(0.5 + confidence / 2, slices - 1)) * counts.std(ddof=1) / math.sqrt(slices)
    rel = float(half / mean)
    return max(0.0, 1.0 - rel), 1.0 + rel
