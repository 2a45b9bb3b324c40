"""Closed-loop scenarios: `offline` (back-to-back batches) and `single_stream` (one query at a
time). Both issue the next query when the previous one returns; they differ in what is reported
first (throughput vs latency) and in the default target percentile of the stopping rule.

The hot loop is kept minimal: one clock read and one array append per query, run in chunks
so that the stopping rule is consulted only every few milliseconds. Time spent consulting it
is measured and excluded from the busy time that throughput is computed over.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field
from itertools import repeat
from typing import Callable

import numpy as np

from ..core.stats import rank, relative_half_width
from .failures import ErrorLog

# Default target percentile of the stopping rule per scenario (MLPerf single-stream reports p90;
# offline's figure is throughput, which the median batch time tracks).
DEFAULT_TARGET = {"offline": 50.0, "single_stream": 90.0, "server": 99.0, "concurrency": 99.0,
                  "ramp": 99.0, "capacity": 99.0}

_CHUNK_TARGET_NS = 5_000_000    # aim for ~5 ms between looks at the clock budget
_CHECK_EVERY_NS = 250_000_000   # consult the stopping rule at most 4 times a second


@dataclass
class Samples:
    """What a scenario measured: per-query start/end clock readings in ns (warm-up excluded)."""
    starts_ns: np.ndarray
    ends_ns: np.ndarray
    busy_ns: int                 # measured window minus the time the harness spent checking
    wall_ns: int
    stop_reason: str
    target_percentile: float
    ci_half_width_rel: float
    warmup_queries: int
    warmup_s: float
    extra: dict = field(default_factory=dict)
    errors: ErrorLog = field(default_factory=ErrorLog)
    sent_ns: np.ndarray | None = None    # open loop: actual sends of the answered queries

    @property
    def latencies_ns(self) -> np.ndarray:
        return self.ends_ns - self.starts_ns


def _latencies(ends: array, chunk_first: array, chunk_start: array) -> np.ndarray:
    e = np.frombuffer(ends, dtype=np.int64)
    starts = np.empty_like(e)
    starts[1:] = e[:-1]
    first = np.frombuffer(chunk_first, dtype=np.int64)
    keep = first < len(e)
    starts[first[keep]] = np.frombuffer(chunk_start, dtype=np.int64)[keep]
    return e - starts


Progress = Callable[[float, int, float | None], None]   # (elapsed s, queries, current p99 ms)


def warm_up(fn, warmup) -> tuple[int, float]:
    clock = time.perf_counter
    t0 = clock()
    if isinstance(warmup, int):
        for _ in repeat(None, warmup):
            fn()
        return warmup, clock() - t0
    n = 0
    end = t0 + warmup
    while clock() < end:
        fn()
        n += 1
    return n, clock() - t0


def run_closed_loop(fn: Callable[[], object], settings, scenario: str,
                    progress: Progress | None = None) -> Samples:
    """Call fn back to back until the stopping rule says stop; fn must return when done.

    A query that raises is recorded in the error log and left out of the samples; the next
    query starts a new chunk with its own clock reading, so no latency spans a failure."""
    target = settings.target_percentile or DEFAULT_TARGET.get(scenario, 50.0)
    warm_n, warm_s = warm_up(fn, settings.warmup)

    clock = time.perf_counter_ns
    # One clock read per query: a query starts when the previous one returned, except the first
    # of each chunk, whose start is read just before it. array('q') keeps 8 bytes a reading (a
    # list would hold 32-byte ints) and numpy reads it without a copy when the rule looks.
    ends = array("q")
    chunk_first = array("q")
    chunk_start = array("q")
    add_end = ends.append
    min_ns = int(settings.min_duration * 1e9)
    max_ns = int(settings.max_duration * 1e9)
    max_q = settings.max_queries
    paused = 0
    chunk = 1
    half_width = float("inf")
    reason = "max_duration"
    errors = ErrorLog()
    max_error_rate = settings.max_error_rate

    begin = clock()
    next_check = begin + min(min_ns, _CHECK_EVERY_NS)
    while True:
        if max_q is not None:
            chunk = min(chunk, max_q - len(ends))
        chunk_first.append(len(ends))
        c0 = clock()
        chunk_start.append(c0)
        try:    # a try block costs nothing until something raises (Python >= 3.11)
            for _ in repeat(None, chunk):
                fn()
                add_end(clock())
        except Exception as exc:  # noqa: BLE001 - a failed query is a result, not a crash
            errors.record(exc)
            chunk = 1
        now = ends[-1] if len(ends) > chunk_first[-1] else clock()
        # Grow the chunk until a chunk takes ~5 ms; fewer Python-level checks per query.
        if now - c0 < _CHUNK_TARGET_NS and chunk < 1 << 16:
            chunk *= 2
        elapsed = now - begin - paused
        n = len(ends)
        if max_q is not None and n >= max_q:
            reason = "max_queries"
            break
        if elapsed >= max_ns:
            reason = "max_duration"
            break
        if now < next_check:
            continue
        # -- harness time from here on, excluded from the busy window
        t_check = clock()
        if errors.budget_exceeded(n, max_error_rate):
            reason = "errors"
            break
        if not n:
            paused += clock() - t_check
            next_check = clock() + _CHECK_EVERY_NS
            continue
        lat = _latencies(ends, chunk_first, chunk_start)
        if elapsed >= min_ns and n >= settings.min_queries:
            half_width = relative_half_width(lat, target, settings.confidence)
            if half_width <= settings.ci_width:
                reason = "ci_converged"
                break
        if progress is not None:
            p99 = float(np.partition(lat, rank(n, 99) - 1)[rank(n, 99) - 1]) / 1e6
            progress(elapsed / 1e9, n, p99)
        after = clock()
        paused += after - t_check
        next_check = after + _CHECK_EVERY_NS
    end = max(ends[-1], c0) if ends else clock()
    ends_np = np.frombuffer(ends, dtype=np.int64).copy()
    starts_np = ends_np - _latencies(ends, chunk_first, chunk_start)
    if len(ends_np):  # report the interval of all the samples, not of the last check
        half_width = relative_half_width(ends_np - starts_np, target, settings.confidence)
    return Samples(starts_ns=starts_np, ends_ns=ends_np,
                   busy_ns=end - begin - paused, wall_ns=end - begin, stop_reason=reason,
                   target_percentile=target, ci_half_width_rel=half_width,
                   warmup_queries=warm_n, warmup_s=warm_s, errors=errors)


SCENARIOS = {"offline": run_closed_loop, "single_stream": run_closed_loop}
