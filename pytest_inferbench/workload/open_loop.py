"""Open-loop load (the `server` scenario): queries are sent at scheduled times whether or not
earlier ones have returned, as independent clients would send them.

Latency runs from each query's *scheduled* send time to its completion, so a stalled system
is charged for every query that waited behind the stall (no coordinated omission). Send lag
(actual send minus scheduled) is recorded apart; when more than 1% of sends are later than
`send_lag_bound`, the result is flagged invalid: the generator, not the system, fell behind.

The system under test is reached through `issue(i)`, which must return at once; it reports
completion by calling `complete(i)`, or `complete(i, exc)` when the query failed (the
exception is counted in the error log by kind; a timeout exception counts as a timeout). For an in-process runner, `InProcessSUT` puts queries
on a FIFO served by `instances` worker threads (one model instance by default), so queueing
under overload shows up in latency as it would in a server.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Callable

import numpy as np

from ..measure.stats import rank, relative_half_width
from .closed_loop import Samples
from .failures import ErrorLog

_CHECK_EVERY_NS = 250_000_000
# The issuer waits with time.sleep, never by spinning: sleeping releases the GIL, spinning
# would starve the worker threads that run the queries.


class NullSUT:
    """Completes every query the moment it is issued: measures the load generator itself."""

    def start(self, complete: Callable[..., None]) -> Callable[[int], None]:
        return complete

    def stop(self) -> None:
        pass


class InProcessSUT:
    """A blocking callable served by worker threads from a FIFO queue.

    thread_init, when given, runs first in each worker thread: per-thread runtime state such
    as torch's inference mode, which is thread-local."""

    def __init__(self, fn: Callable[[], object], instances: int = 1,
                 thread_init: Callable[[], None] | None = None):
        self.fn = fn
        self.instances = instances
        self.thread_init = thread_init

    def start(self, complete: Callable[..., None]) -> Callable[[int], None]:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = []
        fn, q, init = self.fn, self._queue, self.thread_init

        def worker():
            if init is not None:
                init()
            while True:
                i = q.get()
                if i is None:
                    return
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - a failed query is counted, not fatal
                    complete(i, exc)
                else:
                    complete(i)
        for n in range(self.instances):
            t = threading.Thread(target=worker, name=f"inferbench-sut-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        return q.put

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        # A worker stuck in a hung call is left behind (a daemon thread): the run has already
        # counted its query as a timeout, and the session must not hang with it.
        deadline = time.monotonic() + 1.0
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))


def run_open_loop(sut, schedule_ns: np.ndarray, settings, timeout_s: float,
                  send_lag_bound_s: float = 0.001, target: float = 99.0,
                  progress=None) -> Samples:
    n = len(schedule_ns)
    clock = time.perf_counter_ns
    sent = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    completed = [0]
    lock = threading.Lock()
    errors = ErrorLog()

    def complete(i: int, error: BaseException | None = None) -> None:
        done[i] = clock()
        if error is None:
            ok[i] = True
        else:
            errors.record(error)
        with lock:
            completed[0] += 1

    issue = sut.start(complete)
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)   # hand the GIL between issuer and workers promptly
    min_ns = int(settings.min_duration * 1e9)
    max_ns = int(settings.max_duration * 1e9)
    reason = "schedule_end"
    begin = clock() + 2_000_000
    next_check = begin + _CHECK_EVERY_NS
    issued = 0
    sleep = time.sleep
    try:
        for i in range(n):
            due = begin + int(schedule_ns[i])
            if due - begin >= max_ns:
                reason = "max_duration"
                break
            now = clock()
            if due > now:
                sleep((due - now) / 1e9)
            sent[i] = clock()
            issue(i)
            issued = i + 1
            if sent[i] >= next_check:
                finished = ok[:issued] & (done[:issued] > 0)
                lat = (done[:issued] - begin - schedule_ns[:issued])[finished]
                elapsed = sent[i] - begin
                if errors.budget_exceeded(len(lat), settings.max_error_rate):
                    reason = "errors"
                    break
                if (elapsed >= min_ns and len(lat) >= settings.min_queries
                        and relative_half_width(lat, target, settings.confidence)
                        <= settings.ci_width):
                    reason = "ci_converged"
                    break
                if progress is not None and len(lat):
                    k = rank(len(lat), 99) - 1
                    progress(elapsed / 1e9, len(lat), float(np.partition(lat, k)[k]) / 1e6)
                # time spent here shows up as send lag of the next queries: kept short
                next_check = clock() + _CHECK_EVERY_NS
        issue_end = clock()
        deadline = issue_end + int(timeout_s * 1e9)
        while completed[0] < issued and clock() < deadline:
            sleep(0.001)
    finally:
        sys.setswitchinterval(old_switch)
        sut.stop()
    end = clock()
    done, ok = done.copy(), ok.copy()   # a straggler completing now must not change the result
    sched = schedule_ns[:issued] + begin
    finished = done[:issued] > 0
    good = finished & ok[:issued]
    lat_end = done[:issued][good]
    lag = sent[:issued] - sched
    late = int(np.count_nonzero(lag > send_lag_bound_s * 1e9))
    unanswered = int(issued - np.count_nonzero(finished))
    errors.timeout(unanswered)
    samples = Samples(starts_ns=sched[good], ends_ns=lat_end,
                      busy_ns=max(int(done[:issued][finished].max() - begin), 1)
                      if finished.any() else 1,
                      wall_ns=end - begin, stop_reason=reason, target_percentile=target,
                      ci_half_width_rel=float("inf"), warmup_queries=0, warmup_s=0.0,
                      errors=errors)
    samples.extra = {
        "issued": issued,
        "completed": int(np.count_nonzero(good)),      # answered successfully
        "errors": errors.errors,
        "timeouts": errors.timeouts,
        # nominal rate vs the rate this (random) schedule asked for vs the rate actually sent
        "scheduled_rate": (issued - 1) / ((sched[-1] - sched[0]) / 1e9)
        if issued > 1 and sched[-1] > sched[0] else None,
        "achieved_rate": (issued - 1) / ((sent[issued - 1] - sent[0]) / 1e9)
        if issued > 1 and sent[issued - 1] > sent[0] else None,
        "send_lag_ms": {"p50": float(np.percentile(lag, 50)) / 1e6 if issued else None,
                        "p99": float(np.percentile(lag, 99)) / 1e6 if issued else None,
                        "max": float(lag.max()) / 1e6 if issued else None},
        "late_sends": late,
        "late_fraction": late / issued if issued else 0.0,
        "send_lag_bound_ms": send_lag_bound_s * 1e3,
        "valid": (late / issued <= 0.01) if issued else False,
    }
    return samples
