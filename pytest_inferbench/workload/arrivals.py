"""Arrival processes: when each query of an open-loop run is scheduled, seeded and reproducible.

Each returns offsets in nanoseconds from the start of the run, ascending, covering `duration_s`.
- constant: every 1/rate seconds.
- poisson: exponential inter-arrivals at `rate`.
- gamma: Gamma inter-arrivals with shape `burstiness` and mean 1/rate: burstiness 1 is
  Poisson, below 1 burstier (clumps and gaps), above 1 more regular.
- onoff: Poisson at `rate` while on, silent while off, alternating `on` and `off` seconds.
- trace: timestamps (seconds) from a CSV file, shifted to start at 0, replayed as recorded.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

ARRIVALS = ("constant", "poisson", "gamma", "onoff", "trace")


def _cumulative(gaps_s: np.ndarray, duration_s: float) -> np.ndarray:
    t = np.cumsum(gaps_s)
    return (t[t < duration_s] * 1e9).astype(np.int64)


def schedule(arrival: str, rate: float | None, duration_s: float, seed: int = 0,
             burstiness: float = 1.0, on_s: float = 1.0, off_s: float = 1.0,
             trace: str | None = None, exact_count: bool = False) -> np.ndarray:
    """exact_count (poisson): in every block of max(0.1 s, 10 queries), exactly the nominal
    count, at uniform random times within the block (a Poisson process conditioned on its
    count per block). Any stretch of a run then offers the nominal rate, not one seed's luck:
    the rate searches compare steps 5% apart, and stop them early."""
    rng = np.random.default_rng(seed)
    if exact_count and arrival == "poisson" and rate:
        block = max(0.1, 10.0 / rate)
        per_block = rate * block
        out, start, carried = [], 0.0, 0.0
        while start < duration_s:
            carried += per_block
            k = int(carried)
            carried -= k
            out.append(start + np.sort(rng.random(k)) * block)
            start += block
        t = np.concatenate(out)
        return (t[t < duration_s] * 1e9).astype(np.int64)
    if arrival == "trace":
        return load_trace(trace, duration_s)
    if not rate or rate <= 0:
        raise ValueError(f"arrival {arrival} needs a positive rate")
    expected = int(rate * duration_s * 1.2) + 16
    if arrival == "constant":
        n = int(np.ceil(rate * duration_s))
        return (np.arange(n) * (1e9 / rate)).astype(np.int64)
    if arrival == "poisson":
        gaps = rng.exponential(1.0 / rate, expected)
        while gaps.sum() < duration_s:
            gaps = np.concatenate([gaps, rng.exponential(1.0 / rate, expected)])
        return _cumulative(gaps, duration_s)
    if arrival == "gamma":
        k = burstiness
        draw = lambda n: rng.gamma(k, 1.0 / (k * rate), n)  # noqa: E731 - mean 1/rate
        gaps = draw(expected)
        while gaps.sum() < duration_s:
            gaps = np.concatenate([gaps, draw(expected)])
        return _cumulative(gaps, duration_s)
    if arrival == "onoff":
        out, start = [], 0.0
        while start < duration_s:
            on_end = min(start + on_s, duration_s)
            t = start + np.cumsum(rng.exponential(1.0 / rate, int(rate * on_s * 1.5) + 16))
            while t[-1] < on_end:
                t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1.0 / rate, 64))])
            out.append(t[t < on_end])
            start = on_end + off_s
        return (np.concatenate(out) * 1e9).astype(np.int64)
    raise ValueError(f"unknown arrival process '{arrival}'; expected one of {', '.join(ARRIVALS)}")


def load_trace(path: str | Path | None, duration_s: float | None = None) -> np.ndarray:
    """Timestamps in seconds, one per row (first column; a header row is skipped)."""
    if path is None:
        raise ValueError("arrival trace needs `trace: file.csv`")
    values = []
    with open(path, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            try:
                values.append(float(row[0]))
            except ValueError:
                if lineno == 1:
                    continue      # header
                raise ValueError(f"{path}:{lineno}: expected a timestamp in seconds, "
                                 f"got {row[0]!r}") from None
    if not values:
        raise ValueError(f"{path}: no timestamps")
    t = np.sort(np.asarray(values, dtype=np.float64))
    t -= t[0]
    if duration_s is not None:
        t = t[t < duration_s]
    return (t * 1e9).astype(np.int64)
