"""The closed-loop generator of `offline` (back-to-back batches) and `single_stream` (one query
at a time): the next query is issued when the previous one returns. The two differ in what is
reported first and in the default target percentile (core/scenarios/).

The hot loop is kept minimal: one clock read and one array append per query, run in chunks
so that the stopping rule (workload/stopping.py) is consulted only every few milliseconds.
Time spent consulting it is measured and excluded from the busy time that throughput is
computed over.
"""

from __future__ import annotations

import time
from array import array
from itertools import repeat
from typing import Callable

import numpy as np

from .failures import ErrorLog
from .samples import Progress, Samples, SystemUnderTest
from .stopping import CHECK_EVERY_NS, StoppingRule, show_progress

_CHUNK_TARGET_NS = 5_000_000    # aim for ~5 ms between looks at the clock budget


def run(sut: SystemUnderTest, settings, workload, target: float,
        progress: Progress | None = None) -> Samples:
    """The scenario's entry point (core/scenarios/offline.py, single_stream.py)."""
    return run_closed_loop(sut.call, settings, target, progress)


def _latencies(ends: array, chunk_first: array, chunk_start: array) -> np.ndarray:
    e = np.frombuffer(ends, dtype=np.int64)
    starts = np.empty_like(e)
    starts[1:] = e[:-1]
    first = np.frombuffer(chunk_first, dtype=np.int64)
    keep = first < len(e)
    starts[first[keep]] = np.frombuffer(chunk_start, dtype=np.int64)[keep]
    return e - starts


class _Chunks:
    """One clock read per query: a query starts when the previous one returned, except the
    first of each chunk, whose start is read just before it. array('q') keeps 8 bytes a
    reading (a list would hold 32-byte ints) and numpy reads it without a copy."""

    def __init__(self):
        self.ends, self.first, self.start = array("q"), array("q"), array("q")

    def open(self, now: int) -> None:
        self.first.append(len(self.ends))
        self.start.append(now)

    def latencies(self) -> np.ndarray:
        return _latencies(self.ends, self.first, self.start)


def run_closed_loop(fn: Callable[[], object], settings, target: float,
                    progress: Progress | None = None) -> Samples:
    """Call fn back to back until the stopping rule says stop; fn must return when done.

    A query that raises is recorded in the error log and left out of the samples; the next
    query starts a new chunk with its own clock reading, so no latency spans a failure."""
    clock = time.perf_counter_ns
    rule = StoppingRule(settings, target)
    chunks = _Chunks()
    ends = chunks.ends
    add_end = ends.append
    max_q = settings.max_queries
    paused, chunk = 0, 1
    errors = ErrorLog()
    begin = clock()
    next_check = begin + min(rule.min_ns, CHECK_EVERY_NS)
    while True:
        if max_q is not None:
            chunk = min(chunk, max_q - len(ends))
        c0 = clock()
        chunks.open(c0)
        try:    # a try block costs nothing until something raises (Python >= 3.11)
            for _ in repeat(None, chunk):
                fn()
                add_end(clock())
        except Exception as exc:  # noqa: BLE001 - a failed query is a result, not a crash
            errors.record(exc)
            chunk = 1
        now = ends[-1] if len(ends) > chunks.first[-1] else clock()
        # Grow the chunk until a chunk takes ~5 ms; fewer Python-level checks per query.
        if now - c0 < _CHUNK_TARGET_NS and chunk < 1 << 16:
            chunk *= 2
        elapsed = now - begin - paused
        reason = rule.limit(elapsed, len(ends))
        if reason:
            break
        if now < next_check:
            continue
        # -- harness time from here on, excluded from the busy window
        t_check = clock()
        lat = chunks.latencies()
        reason = rule.check(elapsed, lat, errors)
        if reason:
            break
        show_progress(progress, elapsed, lat)
        after = clock()
        paused += after - t_check
        next_check = after + CHECK_EVERY_NS
    end = max(ends[-1], c0) if ends else clock()
    ends_np = np.frombuffer(ends, dtype=np.int64).copy()
    lat = chunks.latencies()        # a new array: the interval of all the samples is reported
    return Samples(starts_ns=ends_np - lat, ends_ns=ends_np,
                   busy_ns=end - begin - paused, wall_ns=end - begin, stop_reason=reason,
                   target_percentile=target, ci_half_width_rel=rule.half_width(lat),
                   errors=errors)
