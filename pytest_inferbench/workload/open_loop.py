"""Open-loop load (the `server` scenario): queries are sent at scheduled times whether or not
earlier ones have returned, as independent clients would send them.

Latency runs from each query's *scheduled* send time to its completion, so a stalled system
is charged for every query that waited behind the stall (no coordinated omission). A late send
therefore makes latency worse, never better. Send lag (actual send minus scheduled) is
recorded apart, with the share of sends later than `send_lag_bound`; the run is flagged
invalid, with the reason, when the lag changed what it reports (the target percentile timed
from the scheduled sends is over 10% above the same percentile timed from the actual sends)
or the rate sent departs from the schedule (by over 2%).

Where the query actually leaves. `issue(i)` is a hand-off; a client may put the request on
the wire later (an event loop busy with responses, a connection pool, serialisation). A
system under test that knows when it wrote a query reports it: `complete(i, exc, sent_ns=t)`
(time.perf_counter_ns, the issuer's clock). Send lag, late sends, the rate sent and the lag
effect are then judged on those write times (`send_time: "write"` in the figures); where a
query has none, on its hand-off (`"hand-off"`). The lag to the hand-off alone is kept as
`send_lag_issuer_ms`, and the client's own delay (write minus hand-off) as `client_lag_ms`.
The KServe clients report the write: the lean HTTP client (serving/lean_http.py) stamps the
`sendall` of its prepared request, the lean gRPC client (serving/lean_grpc.py) the start of
the prepared call, both from the issuer's own thread.

Offered rate. The schedule says what it was drawn from (arrivals.Schedule); the figures
carry `offered`: the rate the run's window held against the target (arrivals.offered),
flagged when it departs by more than the drawing allows. A stratified poisson schedule holds
its nominal count in every block; a run the stopping rule ends early (ci_converged) stops at
the end of the block it is in, not inside it, so that it too offers the nominal count. An
error budget or a search's verdict stops at once, and says how far it fell from the target.

The system under test is reached through `issue(i)`, which must return at once; it reports
completion by calling `complete(i)`, or `complete(i, exc)` when the query failed (the
exception is counted in the error log by kind; a timeout exception counts as a timeout), with
`sent_ns=` its write time when it knows it. A SUT that can read its answers on the issuer's
thread offers `wait_until(ns)`: it is then started with `start(complete, pump=True)` and the
issuer calls it in place of each sleep (the lean HTTP client polls the last 100 us before
a send, where a wake-up from a sleep comes tens of microseconds late). For an in-process
runner, `InProcessSUT` puts queries on a FIFO served by `instances` worker threads (one
model instance by default), so queueing under overload shows up in latency as it would in a
server.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable

import numpy as np

from ..core.stats import percentile, relative_half_width
from . import arrivals
from .failures import ErrorLog
from .samples import Samples, SystemUnderTest
from .stopping import CHECK_EVERY_NS, StoppingRule, show_progress

_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30
_LATE_NS = 250_000          # a send this late is looked for in the issuer's stalls


def _set_timer_slack(ns: int | None) -> int | None:
    """Linux lets a sleep end up to the thread's timer slack (50 us by default) late; the
    issuer asks for 1 us. Returns the previous slack, None where this is not available."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        before = libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)
        if ns is not None and before >= 0:
            libc.prctl(_PR_SET_TIMERSLACK, ns, 0, 0, 0)
        return before if before >= 0 else None
    except (OSError, AttributeError):
        return None
# The issuer waits with time.sleep, never by spinning: sleeping releases the GIL, spinning
# would starve the threads running queries. A SUT's wait_until may poll the last 100 us: it
# reads its own answers while it does, so nothing waits on it.


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


# A run is invalid when the generator, not the system, shaped what it reports: its lag moved
# the reported target percentile (from the scheduled send) by more than this share against
# the same percentile timed from the actual sends, or it sent off the schedule by this much.
MAX_LAG_EFFECT = 0.10
MAX_RATE_DEPARTURE = 0.02


def _issuer_priority():
    """Let the issuing thread preempt the threads it shares a core with (the client's response
    handling, the system's workers) the moment its sleep ends: a real-time policy where the
    process may take one (root, CAP_SYS_NICE), else nothing. The issuer sleeps between sends,
    so it cannot starve anyone. Returns a function that restores the thread's policy."""
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError, PermissionError):
        return lambda: None

    def restore():
        try:
            os.sched_setscheduler(0, before[0], before[1])
        except OSError:
            pass
    return restore


def run(sut: SystemUnderTest, settings, workload, target: float, progress=None) -> Samples:
    """The server scenario's entry point (core/scenarios/server.py): the workload's arrivals
    at its rate (or its trace), open loop."""
    schedule = arrivals.schedule(workload.arrival, workload.rate, settings.max_duration,
                                 seed=settings.seed, burstiness=workload.burstiness,
                                 on_s=workload.on, off_s=workload.off, trace=workload.trace)
    samples = run_open_loop(sut.make_async(), schedule, settings, workload.timeout,
                            workload.send_lag_bound, target, progress)
    samples.extra["target_rate"] = workload.rate
    return samples


class _Completions:
    """Per-query completion records the SUT fills in from its threads through `complete`."""

    def __init__(self, n: int):
        self.done = np.zeros(n, dtype=np.int64)
        self.wrote = np.zeros(n, dtype=np.int64)    # the SUT's write times, where reported
        self.ok = np.zeros(n, dtype=bool)
        self.count = 0
        self.errors = ErrorLog()
        self._lock = threading.Lock()

    def complete(self, i: int, error: BaseException | None = None,
                 sent_ns: int | None = None) -> None:
        self.done[i] = time.perf_counter_ns()
        if sent_ns:
            self.wrote[i] = sent_ns
        if error is None:
            self.ok[i] = True
        else:
            self.errors.record(error)
        with self._lock:
            self.count += 1

    def frozen(self, issued: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(done, ok, wrote) of the issued queries, copied: a straggler completing now must
        not change the result."""
        return (self.done[:issued].copy(), self.ok[:issued].copy(),
                self.wrote[:issued].copy())


@contextmanager
def _issuer_conditions():
    """The issuing thread's conditions for the run: the GIL handed between issuer and
    workers promptly, a 1 us timer slack, a real-time priority where allowed."""
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    old_slack = _set_timer_slack(1000)
    restore_priority = _issuer_priority()
    try:
        yield
    finally:
        sys.setswitchinterval(old_switch)
        if old_slack is not None:
            _set_timer_slack(old_slack)
        restore_priority()


def run_open_loop(sut, schedule_ns: np.ndarray, settings, timeout_s: float,
                  send_lag_bound_s: float = 0.001, target: float = 99.0,
                  progress=None, decide=None, min_s: float | None = None) -> Samples:
    """Send the schedule open loop; stop at its end, at max_duration, when the stopping rule
    (or `decide(latencies_ns, waiting_ns)`: latencies of answered queries and the time
    unanswered ones have waited so far; True = stop) says so, or when errors exceed the
    budget. min_s overrides settings.min_duration as the earliest stop."""
    drawn = schedule_ns                 # an arrivals.Schedule says what it was drawn from
    schedule_ns = np.asarray(schedule_ns)
    runs = _Completions(len(schedule_ns))
    rule = StoppingRule(settings, target, min_s, decide)
    sent = np.zeros(len(schedule_ns), dtype=np.int64)
    wait = getattr(sut, "wait_until", None)     # reads its answers in the issuer's waits
    issue = sut.start(runs.complete, pump=True) if wait else sut.start(runs.complete)
    try:
        with _issuer_conditions():
            begin = time.perf_counter_ns() + 2_000_000
            issued, reason, stop_ns, limit_ns = _issue(issue, drawn, schedule_ns, sent, begin,
                                                       rule, runs, progress, wait)
            _drain(runs, issued, time.perf_counter_ns() + int(timeout_s * 1e9), wait)
    finally:
        sut.stop()
    end = time.perf_counter_ns()
    stalls = getattr(sut, "stalls", None)   # where the issuer was not run while it polled
    done, ok, wrote = runs.frozen(issued)
    offer = arrivals.offered(drawn, issued, offered_window_s(drawn, schedule_ns, issued, stop_ns,
                                                      limit_ns))
    return _samples(schedule_ns[:issued] + begin, sent[:issued], done, ok, begin, end, reason,
                    target, runs.errors, send_lag_bound_s, settings.confidence, wrote=wrote,
                    offered=offer, stalls=stalls)


def _drain(runs, issued: int, deadline_ns: int, wait) -> None:
    """After the last send: until every issued query is answered or the timeout passes."""
    clock = time.perf_counter_ns
    while runs.count < issued and clock() < deadline_ns:
        if wait is None:
            time.sleep(0.001)
        else:
            wait(min(clock() + 1_000_000, deadline_ns))


def _issue(issue, drawn, schedule_ns, sent, begin, rule, runs, progress, wait=None):
    """The issuer: sleep to each scheduled time (or, with `wait`, let the SUT read its
    answers until then), stamp the send, hand the query over; the stopping rule between
    sends. Returns (issued, reason, stop offset ns, limit ns)."""
    clock, sleep = time.perf_counter_ns, time.sleep
    next_check = begin + CHECK_EVERY_NS
    # a converged stratified run stops at the end of its block: whole blocks, nominal count
    block_ns = (drawn.block_s * 1e9 if getattr(drawn, "stratified", False)
                and getattr(drawn, "block_s", None) else 0.0)
    limit_ns, pending, stop_ns = rule.max_ns, None, None
    reason, issued = "schedule_end", 0
    for i in range(len(schedule_ns)):
        due = begin + int(schedule_ns[i])
        if due - begin >= limit_ns:
            return issued, pending or "max_duration", limit_ns, limit_ns
        now = clock()
        if due > now:
            if wait is None:
                sleep((due - now) / 1e9)
            else:
                wait(due)
        sent[i] = clock()
        issue(i)
        issued = i + 1
        if sent[i] < next_check:
            continue
        reason = _check(rule, issued, runs.ok, runs.done, begin, schedule_ns, sent[i],
                        runs.errors, progress)
        if reason == "ci_converged" and block_ns:
            if pending is None:
                pending = reason
                limit_ns = min(limit_ns, int((int(schedule_ns[i]) // block_ns + 1) * block_ns))
            reason = None
        if reason:
            return issued, reason, sent[i] - begin, limit_ns
        reason = "schedule_end"
        # time spent here shows up as send lag of the next queries: kept short
        next_check = clock() + CHECK_EVERY_NS
    return issued, pending or reason, stop_ns, limit_ns


def offered_window_s(drawn, schedule_ns, issued, stop_ns, limit_ns) -> float:
    """The stretch of the schedule the run offered: up to where it stopped, or to the
    schedule's end (its drawn duration when whole, else one mean gap past its last send)."""
    if stop_ns is not None:
        return stop_ns / 1e9
    whole = getattr(drawn, "drawn", None) == len(schedule_ns)
    end = getattr(drawn, "duration_s", None) if whole else None
    if end is None:
        if issued < 2:
            return 0.0
        end = schedule_ns[issued - 1] / 1e9 * issued / (issued - 1)
    return min(end, limit_ns / 1e9)


def _check(rule, issued, ok, done, begin, schedule_ns, now, errors, progress) -> str | None:
    """The stopping rule, between two sends; returns why to stop, or None."""
    answered = done[:issued] > 0
    finished = ok[:issued] & answered
    lat = (done[:issued] - begin - schedule_ns[:issued])[finished]
    elapsed = now - begin
    waiting = (now - begin - schedule_ns[:issued])[~answered]
    reason = rule.check(elapsed, lat, errors, waiting)
    if reason is None:
        show_progress(progress, elapsed, lat)
    return reason


def _samples(sched, sent, done, ok, begin, end, reason, target, errors,
             send_lag_bound_s, confidence, wrote=None, offered=None, stalls=None) -> Samples:
    """wrote: the SUT's write time per query (0 where it reported none); sends are judged
    on it where present, on the hand-off `sent` elsewhere. stalls: the SUT's (start, end)
    stretches where its issuer was not run (None where it cannot tell)."""
    issued = len(sched)
    finished = done > 0
    good = finished & ok
    handoff = sent
    has_write = wrote > 0 if wrote is not None else np.zeros(issued, dtype=bool)
    if has_write.any():
        sent = np.where(has_write, wrote, handoff)
    lag = sent - sched
    late = int(np.count_nonzero(lag > send_lag_bound_s * 1e9))
    errors.timeout(int(issued - np.count_nonzero(finished)))
    lat = done[good] - sched[good]
    samples = Samples(starts_ns=sched[good], ends_ns=done[good],
                      busy_ns=max(int(done[finished].max() - begin), 1)
                      if finished.any() else 1,
                      wall_ns=end - begin, stop_reason=reason, target_percentile=target,
                      ci_half_width_rel=relative_half_width(lat, target, confidence) if len(lat)
                      else float("inf"), warmup_queries=0, warmup_s=0.0, errors=errors)
    # nominal rate vs the rate this (random) schedule asked for vs the rate actually sent
    scheduled_rate = ((issued - 1) / ((sched[-1] - sched[0]) / 1e9)
                      if issued > 1 and sched[-1] > sched[0] else None)
    # writes may leave in another order than the hand-offs: the span of all of them
    span = int(sent.max() - sent.min()) if issued > 1 else 0
    achieved_rate = (issued - 1) / (span / 1e9) if span > 0 else None
    lag_p99 = float(np.percentile(lag, 99)) / 1e6 if issued else None
    samples.sent_ns = sent[good]
    held = issuer_stalls(stalls, sched, sent) if stalls is not None and issued else None
    effect, problems = lag_validity(lat, done[good] - sent[good], target, lag_p99,
                                    scheduled_rate, achieved_rate, _stall_cause(held))
    if not issued:
        problems.append("no query was sent")
    samples.extra = {
        "issued": issued,
        "completed": int(np.count_nonzero(good)),      # answered successfully
        "errors": errors.errors,
        "timeouts": errors.timeouts,
        "scheduled_rate": scheduled_rate,
        "achieved_rate": achieved_rate,
        "send_lag_ms": {"p50": float(np.percentile(lag, 50)) / 1e6 if issued else None,
                        "p99": lag_p99,
                        "max": float(lag.max()) / 1e6 if issued else None},
        # what "sent" is: the SUT's write (all or some queries) or the issuer's hand-off
        "send_time": "write" if has_write.all() and issued else
                     "write, some hand-off" if has_write.any() else "hand-off",
        "writes_reported": int(np.count_nonzero(has_write)),
        "send_lag_issuer_ms": _lag_ms(handoff - sched),
        "client_lag_ms": _lag_ms((sent - handoff)[has_write]) if has_write.any() else None,
        "offered_rate": offered["offered_rate"] if offered else None,
        "offered": offered,
        "issuer_stalls": held,
        "late_sends": late,
        "late_fraction": late / issued if issued else 0.0,
        "send_lag_bound_ms": send_lag_bound_s * 1e3,
        "lag_effect": effect,       # reported percentile / percentile from actual sends - 1
        "valid": not problems,
        "invalid_reasons": problems,
    }
    return samples


def _lag_ms(lag_ns: np.ndarray) -> dict:
    if not len(lag_ns):
        return {"p50": None, "p99": None, "max": None}
    return {"p50": float(np.percentile(lag_ns, 50)) / 1e6,
            "p99": float(np.percentile(lag_ns, 99)) / 1e6, "max": float(lag_ns.max()) / 1e6}


def issuer_stalls(stalls, sched_ns: np.ndarray, sent_ns: np.ndarray) -> dict:
    """The stretches the issuer was not run (lean_pool.Pumped.stalls) inside the run, and
    how many of the sends over _LATE_NS late one of them overlapped: lag that the host (or a
    thread holding the GIL) made, not the client's own work."""
    s = np.asarray(stalls, dtype=np.int64).reshape(-1, 2)
    s = s[(s[:, 1] >= sched_ns.min()) & (s[:, 0] <= sent_ns.max())]
    late = (sent_ns - sched_ns) > _LATE_NS
    due, at = sched_ns[late], sent_ns[late]
    last = np.searchsorted(s[:, 0], at, side="right") - 1     # the last stall begun by then
    held = (last >= 0) & (s[np.clip(last, 0, None), 1] >= due) if len(s) else \
        np.zeros(len(due), dtype=bool)
    length = (s[:, 1] - s[:, 0]) / 1e6
    return {"count": len(s), "max_ms": float(length.max()) if len(s) else 0.0,
            "total_ms": float(length.sum()), "late_sends": int(len(due)),
            "late_in_stalls": int(np.count_nonzero(held)), "late_ms": _LATE_NS / 1e6}


def _stall_cause(held: dict | None) -> str | None:
    """What made the late sends late, for the send-lag verdict."""
    if not held or not held["late_sends"]:
        return None
    n, m = held["late_sends"], held["late_in_stalls"]
    if 2 * m >= n:
        return (f"{m} of the {n} sends over {held['late_ms']:g} ms late were due while the "
                f"issuer was not run (stalls up to {held['max_ms']:.3g} ms: the host, a thread "
                f"holding the GIL, or a write the socket blocked); re-run on a quieter host")
    return (f"{n - m} of the {n} sends over {held['late_ms']:g} ms late were made late by "
            f"the client's own work ({m} by stalls of the host)")


def lag_validity(from_sched_ns: np.ndarray, from_sent_ns: np.ndarray, target: float,
                 lag_p99_ms: float | None, scheduled_rate: float | None,
                 achieved_rate: float | None,
                 cause: str | None = None) -> tuple[float | None, list[str]]:
    """(lag effect, problems): did the generator shape what the run reports? The target
    percentile timed from the scheduled sends against the same percentile timed from the
    actual sends (what the system alone would show), and the rate sent against the rate the
    schedule asked for. cause: what made the sends late, said with the verdict."""
    problems, effect = [], None
    if len(from_sched_ns):      # nearest rank, as every reported percentile
        from_sched = percentile(np.sort(from_sched_ns), target) / 1e6
        from_sent = percentile(np.sort(from_sent_ns), target) / 1e6
        effect = from_sched / from_sent - 1 if from_sent > 0 else 0.0
        if effect > MAX_LAG_EFFECT:
            lag = f" (p99 {lag_p99_ms:.3g} ms)" if lag_p99_ms is not None else ""
            problems.append(f"send lag{lag} moved latency p{target:g} from "
                            f"{from_sent:.3g} to {from_sched:.3g} ms (+{100 * effect:.1f}%, "
                            f"limit {100 * MAX_LAG_EFFECT:g}%)" + (f"; {cause}" if cause else ""))
    if scheduled_rate and achieved_rate and \
            abs(achieved_rate / scheduled_rate - 1) > MAX_RATE_DEPARTURE:
        problems.append(f"sent {achieved_rate:,.1f}/s against a schedule of "
                        f"{scheduled_rate:,.1f}/s (limit ±{100 * MAX_RATE_DEPARTURE:g}%)")
    return effect, problems
