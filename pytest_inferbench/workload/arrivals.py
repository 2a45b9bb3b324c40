"""Arrival processes: when each query of an open-loop run is scheduled, seeded and reproducible.

Each returns offsets in nanoseconds from the start of the run, ascending, covering `duration_s`.
- constant: every 1/rate seconds.
- poisson: exponential inter-arrivals at `rate`, stratified by default (below).
- gamma: Gamma inter-arrivals with shape `burstiness` and mean 1/rate: burstiness 1 is
  Poisson, below 1 burstier (clumps and gaps), above 1 more regular.
- onoff: Poisson at `rate` while on, silent while off, alternating `on` and `off` seconds.
- trace: timestamps (seconds) from a CSV file, shifted to start at 0, replayed as recorded.

Offered rate. One seed's draw of i.i.d. exponential gaps is luck, not the nominal rate: over
15 s, seed 0 offered 20%, 16%, 11% and 3% fewer queries than asked at 2, 8, 32 and 64/s. So
poisson is stratified unless `exact_count=False`: the duration is cut into equal blocks of
at least max(0.1 s, 10 queries), each block holds exactly its share of rate x duration
(carried over, so the whole schedule holds round(rate x duration) queries), at uniform
random times within it: a Poisson process conditioned on its count per block, its gaps
exponential-like (coefficient of variation 0.91 at 10 queries a block, against 1.0 for
i.i.d. exponential gaps; nearer 1 above 100/s, where a 0.1 s block holds more). Any stretch
of whole blocks offers the nominal rate; a run stopped inside a block departs from it by
that block's partial count only (`tolerance`), and the open loop ends a converged run at a
block's end. Capacity-search steps, paired slices and `server` cells all draw it so. Where
stratification does not apply (constant needs none; gamma, onoff, unstratified poisson and
traces are offered as drawn or recorded), `offered()` says how far the rate the window held
departs from the target, and flags a departure over MAX_OFFER_DEPARTURE; the open loop
(open_loop.py) puts it in the result's `load` as `offered_rate` and `offered` (the target,
the departure, its tolerance, whether flagged, and a note saying so). The target of onoff is
`rate` over the on-time in the window; of a trace, `rate` where given, else the trace's own
mean rate over its whole recorded span.

The schedule is a `Schedule`: an int64 array that also carries what it was drawn from
(arrival, rate, duration, whether stratified and the block length), so the open loop can
judge what it offered without being told.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

ARRIVALS = ("constant", "poisson", "gamma", "onoff", "trace")


def _cumulative(gaps_s: np.ndarray, duration_s: float) -> np.ndarray:
    t = np.cumsum(gaps_s)
    return (t[t < duration_s] * 1e9).astype(np.int64)


# a window offering over 2% off its target is flagged (as a rate sent off its schedule is:
# open_loop.MAX_RATE_DEPARTURE)
MAX_OFFER_DEPARTURE = 0.02
_META = ("arrival", "rate", "duration_s", "stratified", "block_s", "on_s", "off_s",
         "trace_rate", "drawn")


class Schedule(np.ndarray):
    """Offsets (int64 ns, ascending) and what they were drawn from. Slicing and arithmetic
    keep the attributes: a prefix (`schedule[:max_queries]`) is still judged against the
    rate it was drawn at, `drawn` being the whole schedule's length."""
    arrival: str | None = None
    rate: float | None = None
    duration_s: float | None = None
    stratified: bool = False
    block_s: float | None = None
    on_s: float | None = None
    off_s: float | None = None
    trace_rate: float | None = None     # a trace's own rate over its whole recorded span
    drawn: int | None = None

    def __array_finalize__(self, obj):
        for key in _META:
            setattr(self, key, getattr(obj, key, None))

    def __array_wrap__(self, arr, context=None, *args):
        # a reduction (max, sum, percentile) is a number, as from any array
        if arr.ndim == 0:
            return arr[()]
        return super().__array_wrap__(arr, context, *args)


def _make(t_ns: np.ndarray, arrival: str, rate, duration_s, **meta) -> Schedule:
    out = np.asarray(t_ns, dtype=np.int64).view(Schedule)
    out.arrival, out.rate, out.duration_s, out.drawn = arrival, rate, duration_s, len(out)
    out.stratified = False
    for key, value in meta.items():
        setattr(out, key, value)
    return out


def _stratified(rng, rate: float, duration_s: float) -> tuple[np.ndarray, float]:
    """Blocks of at least max(0.1 s, 10 queries) that divide the duration evenly, block j
    holding round(rate x end of j) - round(rate x start of j) queries at uniform times."""
    n_blocks = max(1, int(duration_s / max(0.1, 10.0 / rate)))
    block = duration_s / n_blocks
    due = np.floor(rate * block * np.arange(n_blocks + 1) + 0.5).astype(np.int64)
    out = [j * block + np.sort(rng.random(int(k))) * block
           for j, k in enumerate(np.diff(due)) if k]
    t = np.concatenate(out) if out else np.zeros(0)
    return (t[t < duration_s] * 1e9).astype(np.int64), block


def schedule(arrival: str, rate: float | None, duration_s: float, seed: int = 0,
             burstiness: float = 1.0, on_s: float = 1.0, off_s: float = 1.0,
             trace: str | None = None, exact_count: bool | None = None) -> Schedule:
    """exact_count (poisson; None = yes, the default): stratified, as the module says, so
    that the schedule offers the nominal count; False draws i.i.d. exponential gaps."""
    rng = np.random.default_rng(seed)
    if arrival == "trace":
        full = load_trace(trace)
        span = (full[-1] - full[0]) / 1e9 if len(full) > 1 else 0.0
        t = full[full < duration_s * 1e9] if duration_s is not None else full
        return _make(t, arrival, rate, duration_s,
                     trace_rate=(len(full) - 1) / span if span > 0 else None)
    if not rate or rate <= 0:
        raise ValueError(f"arrival {arrival} needs a positive rate")
    if arrival == "poisson" and exact_count is not False:
        t, block = _stratified(rng, rate, duration_s)
        return _make(t, arrival, rate, duration_s, stratified=True, block_s=block)
    expected = int(rate * duration_s * 1.2) + 16
    if arrival == "constant":
        n = int(np.ceil(rate * duration_s))
        return _make((np.arange(n) * (1e9 / rate)).astype(np.int64), arrival, rate,
                     duration_s)
    if arrival == "poisson":
        gaps = rng.exponential(1.0 / rate, expected)
        while gaps.sum() < duration_s:
            gaps = np.concatenate([gaps, rng.exponential(1.0 / rate, expected)])
        return _make(_cumulative(gaps, duration_s), arrival, rate, duration_s)
    if arrival == "gamma":
        k = burstiness
        draw = lambda n: rng.gamma(k, 1.0 / (k * rate), n)  # noqa: E731 - mean 1/rate
        gaps = draw(expected)
        while gaps.sum() < duration_s:
            gaps = np.concatenate([gaps, draw(expected)])
        return _make(_cumulative(gaps, duration_s), arrival, rate, duration_s)
    if arrival == "onoff":
        out, start = [], 0.0
        while start < duration_s:
            on_end = min(start + on_s, duration_s)
            t = start + np.cumsum(rng.exponential(1.0 / rate, int(rate * on_s * 1.5) + 16))
            while t[-1] < on_end:
                t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1.0 / rate, 64))])
            out.append(t[t < on_end])
            start = on_end + off_s
        return _make((np.concatenate(out) * 1e9).astype(np.int64), arrival, rate, duration_s,
                     on_s=on_s, off_s=off_s)
    raise ValueError(f"unknown arrival process '{arrival}'; expected one of {', '.join(ARRIVALS)}")


def _expected(s: Schedule, window_s: float) -> float | None:
    """Queries the target rate asks for in [0, window_s)."""
    if s.arrival == "trace":
        rate = s.rate or s.trace_rate
        return rate * window_s if rate else None
    if s.rate is None:
        return None
    if s.arrival == "constant":
        return float(np.ceil(s.rate * window_s - 1e-9))
    if s.arrival == "onoff" and s.on_s is not None:
        cycle = s.on_s + s.off_s
        whole, part = divmod(window_s, cycle)
        return s.rate * (whole * s.on_s + min(part, s.on_s))
    return s.rate * window_s


def offered(s, queries: int, window_s: float) -> dict | None:
    """How the `queries` scheduled in [0, window_s) compare with what the target rate asks
    for there; None when `s` is a plain array (nothing known of its drawing) or the window
    is empty. `tolerance`: the departure the drawing allows (the count is exact to one query
    for constant and stratified poisson, plus a partial block's binomial spread, 3 sigma, for
    a stratified run stopped inside a block); for other arrivals MAX_OFFER_DEPARTURE. A
    departure over it is `flagged`, with a `note` that says so."""
    if not isinstance(s, Schedule) or window_s <= 0:
        return None
    expected = _expected(s, window_s)
    if not expected:
        return None
    target = expected / window_s
    rate = queries / window_s
    departure = rate / target - 1
    if s.arrival == "constant" or s.stratified:
        slack = 1.0
        if s.stratified and s.block_s:
            frac = (window_s / s.block_s) % 1.0
            per_block = (s.rate or 0) * s.block_s
            slack += 3.0 * np.sqrt(per_block * frac * (1 - frac))
        tolerance = slack / expected
        how = "stratified" if s.stratified else "exact"
    else:
        tolerance = MAX_OFFER_DEPARTURE
        how = "as drawn" if s.arrival != "trace" else "as recorded"
    flagged = bool(abs(departure) > tolerance)
    note = None
    if flagged:
        note = (f"offered {rate:,.3g}/s against a target of {target:,.3g}/s "
                f"({100 * departure:+.1f}%, tolerance ±{100 * tolerance:.1f}%, arrival "
                f"{s.arrival} {how}, {queries} queries in {window_s:.3g} s)")
    return {"target_rate": round(target, 6), "offered_rate": round(rate, 6),
            "departure": round(departure, 6), "tolerance": round(tolerance, 6),
            "arrival": s.arrival, "stratified": bool(s.stratified),
            "block_s": round(s.block_s, 6) if s.block_s else None,
            "queries": int(queries), "expected_queries": round(expected, 3),
            "window_s": round(window_s, 6), "flagged": flagged, "note": note}


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
