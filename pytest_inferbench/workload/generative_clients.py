"""Client worker processes for the generative open loop: each sends its share of the schedule
at the scheduled times from its own event loop and parses its own streams.

What the measurements say (benchmarks/generative_client_lag.py, 2-core host, mock server on
one core, client on the other): the in-process client's lag at 150 req/s (client lag p99 3 to
46 ms over six runs, TTFT p99 up to +22%, two runs invalid) came with a 50-90 ms garbage
collection of the pytest-side process inside every one of those windows (it holds the GIL
and stops the event loop), not from parsing (the loop used 0.35-0.6 of a core at 3,600-7,500
chunks/s) nor from the issuer and the loop trading the GIL; with collection off during the
window (measure_generative) it held client lag p99 <= 3.4 ms to 300 req/s, every run valid.
Processes are for what one core cannot parse (~13,000 chunks/s here at a full core), for a
client kept away from a big pytest process, and for the capacity search, which sends from
here. On one core a process did no better than the in-process loop, and two did worse.

- Schedule: round-robin shards (request i goes to worker i % N), one absolute start time
  (`begin`, time.perf_counter_ns) for all: on Linux perf_counter is CLOCK_MONOTONIC, one
  clock for every process on the host (tests/test_generative.py checks it across processes).
- Timers: asyncio's epoll waits in whole milliseconds (rounded up), so a timer would fire up
  to 1 ms late; the worker's selector first waits on the epoll descriptor with select(),
  which has microsecond resolution and still wakes for any I/O (_PreciseEpoll).
- Per request the worker records what the in-process client records (scheduled, dispatched
  = its timer fired, sent, first token, every chunk, end, usage, status, error) and sends
  finished RequestRecords to the parent every 100 ms, so the parent applies the stopping
  rule (or a search's verdict) while the run goes on; at the end, the requests still open.
- The parent merges and summarises exactly as for the in-process client.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import select
import selectors
import time
from multiprocessing.connection import wait

import numpy as np

from ..serving.openai_client import OpenAIClient, RequestRecord, error_text
from ..spec.generative import parse_slo_key
from .failures import ErrorLog, is_timeout
from .generative_metrics import (
    MAX_LAG_EFFECT,
    e2e_ns,
    metric_values,
    open_extra,
    request_metrics,
    summarise,
)
from .rate_search import bounds_decided, judge_bounds, step_schedule
from .stopping import StoppingRule, show_progress

_PROGRESS_S = 0.1          # finished records go to the parent this often
_START_MARGIN_NS = 100_000_000   # every worker has its shard before the first send is due
_CHECK_EVERY_NS = 250_000_000
_FINISH_S = 30.0           # cancelling open requests and sending records back takes this at most
_PR_SET_TIMERSLACK = 29


class _PreciseEpoll(selectors.EpollSelector):
    """epoll_wait takes whole milliseconds (Python rounds a timeout up): wait on the epoll
    descriptor with select() first, microsecond timeouts, woken by any registered event."""

    def select(self, timeout=None):
        if timeout is not None and timeout > 0:
            select.select([self._selector.fileno()], [], [], timeout)
            timeout = 0
        return super().select(timeout)


def _timer_slack(ns: int) -> None:
    # a sleep may end up to the timer slack late (50 us by default): ask for 1 us
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, ns, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class _RemoteError(RuntimeError):
    """An exception raised in a worker, carried back by type name and message."""


def _remote(type_name: str, message: str) -> BaseException:
    # the error log groups failures by exception type: keep the worker's type name
    return type(type_name, (_RemoteError,), {})(message)


# ----------------------------------------------------------------------------- the worker

def _worker_main(conn, config: dict) -> None:
    _timer_slack(1000)
    loop = asyncio.SelectorEventLoop(_PreciseEpoll())
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(conn, config))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass            # the parent went away: nothing to report to
    finally:
        loop.close()


async def _serve(conn, cfg: dict) -> None:
    loop = asyncio.get_running_loop()
    client = OpenAIClient(cfg["url"], cfg["api"], cfg["stream"], cfg["api_key_env"],
                          cfg["timeout"])
    inbox: asyncio.Queue = asyncio.Queue()

    def receive():
        try:
            inbox.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("close",))
    loop.add_reader(conn.fileno(), receive)
    conn.send(("ready", os.getpid()))
    try:
        while True:
            msg = await inbox.get()
            if msg[0] == "run":
                await _run(conn, inbox, client, cfg, *msg[1:])
            elif msg[0] == "close":
                return
    finally:
        await client.close()


async def _run(conn, inbox, client, cfg, begin_ns: int, items: list) -> None:
    """Send items [(index, scheduled offset ns)] at begin + offset; report finished records
    every _PROGRESS_S; 'halt' stops issuing, 'finish' cancels what is still open and sends
    it back (unanswered: the parent counts them as timeouts)."""
    run = _ChildRun(conn, client, cfg, begin_ns, items)
    cpu0 = time.process_time()
    # what exists now (imports, bodies, the session) is never scanned again: a collection
    # during the run looks at the run's own young objects only (sub-millisecond pauses)
    gc.collect()
    gc.freeze()
    run.arm()
    try:
        await run.serve(inbox)
    finally:
        left = await run.cancel_open()
        gc.unfreeze()
        conn.send(("final", list(run.finished), left, time.process_time() - cpu0))


class _ChildRun:
    """A client process's share of one run: a loop timer fires at each scheduled time and
    starts the requests due; finished ones are sent to the parent in batches."""

    def __init__(self, conn, client, cfg, begin_ns: int, items: list):
        self.conn, self.client, self.begin_ns, self.items = conn, client, begin_ns, items
        self.loop = asyncio.get_running_loop()
        # loop.time() is time.monotonic(); perf_counter is the same clock on Linux: any
        # offset between them (another OS) is measured once and applied
        self.shift = time.monotonic() - time.perf_counter_ns() / 1e9
        self.bodies, self.meta = cfg["bodies"], cfg["meta"]
        self.open: dict[int, tuple[asyncio.Task, RequestRecord]] = {}
        self.finished: list = []
        self.next, self.timer = 0, None

    async def one(self, rec: RequestRecord, body: bytes):
        kind = None
        try:
            await self.client.send(rec, body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed request is a result
            rec.error = error_text(exc)
            kind = ("timeout", None, None) if is_timeout(exc) else \
                ("error", type(exc).__name__, str(exc))
        self.open.pop(rec.index, None)
        self.finished.append((rec, kind))

    def fire(self):
        clock, items, bodies = time.perf_counter_ns, self.items, self.bodies
        now = clock()
        k = self.next
        while k < len(items) and self.begin_ns + items[k][1] <= now:
            i, off = items[k]
            j = i % len(bodies)
            ept, mt, conv, turn = self.meta[j]
            rec = RequestRecord(index=i, scheduled_ns=self.begin_ns + off,
                                dispatched_ns=clock(), expected_prompt_tokens=ept,
                                max_tokens=mt, conversation=conv, turn=turn)
            self.open[i] = (self.loop.create_task(self.one(rec, bodies[j])), rec)
            k += 1
        self.next = k
        self.arm()

    def arm(self):
        k = self.next
        self.timer = (self.loop.call_at((self.begin_ns + self.items[k][1]) / 1e9 + self.shift,
                                        self.fire) if k < len(self.items) else None)

    def flush(self):
        if self.finished:
            self.conn.send(("done", list(self.finished)))
            self.finished.clear()

    async def serve(self, inbox) -> None:
        """Answer the parent until it says finish (or close)."""
        while True:
            try:
                msg = await asyncio.wait_for(inbox.get(), _PROGRESS_S)
            except asyncio.TimeoutError:
                self.flush()
                continue
            if msg[0] == "halt":
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
                self.flush()
                self.conn.send(("halted", self.next))
            elif msg[0] == "finish":
                return
            elif msg[0] == "close":     # the parent gave up on the run: end after it
                inbox.put_nowait(msg)
                return

    async def cancel_open(self) -> list:
        """Stop the timer, cancel the requests still open; returns their records."""
        if self.timer is not None:
            self.timer.cancel()
        tasks = [t for t, _ in self.open.values()]
        left = [rec for _, rec in self.open.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return left


# ----------------------------------------------------------------------------- the parent

class ClientProcesses:
    """N worker processes, each with an event loop and a client to the server at `url`,
    holding the prepared request bodies; started once per cell, reused for every run (the
    steps of a rate search)."""

    def __init__(self, n: int, url: str, api: str, stream: bool, api_key_env: str | None,
                 timeout: float, prepared, start_timeout: float = 60.0):
        ctx = multiprocessing.get_context("spawn")   # no fork of a threaded pytest process
        config = {"url": url, "api": api, "stream": stream, "api_key_env": api_key_env,
                  "timeout": timeout, "bodies": [p.body for p in prepared],
                  "meta": [(p.expected_prompt_tokens, p.max_tokens, p.conversation, p.turn)
                           for p in prepared]}
        self.conns, self.procs = [], []
        self.n = n
        try:
            for k in range(n):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child, config),
                                   name=f"inferbench-client-{k}", daemon=True)
                proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)
            deadline = time.monotonic() + start_timeout
            for conn, proc in zip(self.conns, self.procs):
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"client process {proc.name} did not start in "
                                       f"{start_timeout:g}s")
                conn.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise RuntimeError(f"a client process failed to start ({exc}); exit codes "
                               f"{[p.exitcode for p in self.procs]}") from None
        except BaseException:
            self.close()
            raise
        self.cpu_s: list[float] = []

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close",))
            except (OSError, ValueError):
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
        for conn in self.conns:
            conn.close()

    def run(self, schedule_ns, max_s: float, timeout_s: float, check=None):
        """Send `schedule_ns` (offsets from the start), sharded round-robin. check(records
        so far by index, ErrorLog, elapsed ns) runs every 250 ms: a stop reason or None.
        Returns (records by index, begin_ns, end_ns, stop reason, ErrorLog, issued)."""
        clock = time.perf_counter_ns
        max_ns = int(max_s * 1e9)
        schedule = [int(s) for s in schedule_ns if s < max_ns]
        reason = "schedule_end" if len(schedule) == len(schedule_ns) else "max_duration"
        begin = clock() + _START_MARGIN_NS
        for k, conn in enumerate(self.conns):
            conn.send(("run", begin, [(i, schedule[i]) for i in range(k, len(schedule),
                                                                       self.n)]))
        last_due = begin + (schedule[-1] if schedule else 0)
        run = _ProcessRun(self, begin, last_due, reason, timeout_s, check)
        while len(run.final) < self.n:
            run.receive(wait(self.conns, timeout=0.05))
            run.advance(clock())
        end = clock()
        issued = run.count_leftovers()
        return run.records, begin, end, run.reason, run.errors, issued


class _ProcessRun:
    """The parent's side of one run of the client processes: what they sent back, and the
    run's course (issue until the schedule ends or `check` stops it; then halt, drain the
    answers for up to timeout_s, and collect every process's final records)."""

    def __init__(self, pool, begin: int, last_due: int, reason: str, timeout_s: float, check):
        self.pool, self.begin, self.last_due, self.reason = pool, begin, last_due, reason
        self.timeout_s, self.check = timeout_s, check
        self.records: dict[int, RequestRecord] = {}
        self.errors = ErrorLog()
        self.halted: dict[int, int] = {}
        self.final: dict[int, list] = {}
        self.halt_sent = False
        self.next_check = begin + _CHECK_EVERY_NS
        self.drain_deadline = self.finish_by = None

    def receive(self, ready) -> None:
        pool = self.pool
        for conn in ready:
            k = pool.conns.index(conn)
            try:
                msg = conn.recv()
            except EOFError:
                raise RuntimeError(f"client process {pool.procs[k].name} ended "
                                   f"(exit code {pool.procs[k].exitcode})") from None
            if msg[0] == "done":
                self._take(msg[1])
            elif msg[0] == "halted":
                self.halted[k] = msg[1]
            elif msg[0] == "final":
                self._take(msg[1])
                self.final[k] = msg[2]
                pool.cpu_s.append(msg[3])

    def _take(self, done) -> None:
        for rec, kind in done:
            self.records[rec.index] = rec
            if kind is None:
                continue
            if kind[0] == "timeout":
                self.errors.timeout()
            else:
                self.errors.record(_remote(kind[1], kind[2]))

    def advance(self, now: int) -> None:
        if not self.halt_sent:
            self._maybe_halt(now)
        elif len(self.halted) == self.pool.n and self.drain_deadline is None:
            self.drain_deadline = now + int(self.timeout_s * 1e9)
        if self.finish_by is not None and now > self.finish_by:
            raise RuntimeError(f"client processes did not hand back their records "
                               f"{_FINISH_S:g}s after the run ended")
        if self.drain_deadline is not None and self.finish_by is None and (
                len(self.records) >= sum(self.halted.values()) or now >= self.drain_deadline):
            self._send_all(("finish",))
            self.finish_by = now + int(_FINISH_S * 1e9)

    def _maybe_halt(self, now: int) -> None:
        stop = None
        if now >= self.last_due:
            stop = self.reason
        elif now >= self.next_check and self.check is not None:
            stop = self.check(self.records, self.errors, now - self.begin)
            self.next_check = now + _CHECK_EVERY_NS
        if stop:
            self.reason = stop
            self._send_all(("halt",))
            self.halt_sent = True

    def _send_all(self, msg) -> None:
        for conn in self.pool.conns:
            conn.send(msg)

    def count_leftovers(self) -> int:
        """Requests still open when the processes finished count as timeouts; returns how
        many were issued in all."""
        for left in self.final.values():
            for rec in left:
                if rec.error is None:
                    rec.error = "no answer before the run ended (counted as a timeout)"
                self.records[rec.index] = rec
                self.errors.timeout()
        return sum(self.halted.values())


# ----------------------------------------------------------------------------- the runs

def run_open_processes(pool, schedule, workload, settings, target, progress,
                       decide=None, min_s=None):
    """The server scenario sent by client processes (workload/generative_clients.py), with
    the open loop's stopping rule: errors over budget, then after min_duration the target
    percentile's CI on E2E (or decide(records): True = stop). Returns (records, begin,
    stop reason, ErrorLog, the open loop's figures). decide(e2e, records): True = stop."""
    rule = StoppingRule(settings, target, min_s, decide)
    e2e_seen: list = []     # E2E of the records taken so far (arrival order): not redone
    taken = [0]

    def check(records, errors, elapsed_ns):
        done = list(records.values())
        e2e_seen.extend(e2e_ns(done[taken[0]:]).tolist())
        taken[0] = len(done)
        e2e = np.asarray(e2e_seen, dtype=np.int64)
        reason = rule.check(elapsed_ns, e2e, errors, done)
        if reason is None:
            show_progress(progress, elapsed_ns, e2e)
        return reason

    by_index, begin, end, reason, errors, issued = pool.run(
        schedule, settings.max_duration, workload.timeout, check)
    records = [by_index[i] for i in sorted(by_index)]
    extra = open_extra(records, begin, end, reason, errors, issued, workload.send_lag_bound,
                       target, schedule, settings.max_duration)
    return records, begin, reason, errors, extra


class CapacitySteps:
    """The capacity search on goodput (workload/rate_search.py's `stepper`): each step is an open
    loop at one rate sent by the client processes, stopped as soon as every SLO bound is
    decided; the step passes when every bound (ttft_p99, tpot_p99, ...) is proven within
    by LoadGen's early-stopping rule and settled (search.py's rule for one bound, applied to
    each), i.e. when the requests meeting the whole SLO are the goodput the rate asks for."""

    def __init__(self, pool, workload, settings, target, slo: dict, streamed: bool):
        self.pool, self.workload, self.settings = pool, workload, settings
        self.target, self.slo, self.streamed = target, slo, streamed

    def bounds(self, records, unanswered: int = 0) -> list:
        m = request_metrics(records, self.streamed)
        out = []
        for key, bound in self.slo.items():
            metric, p = parse_slo_key(key)
            out.append((p, int(bound * 1e9), metric_values(m, metric), unanswered))
        return out

    def run(self, rate, seconds, min_s, seed, progress):
        schedule = step_schedule(self.workload, rate, seconds, seed)
        settings = self.settings.model_copy(update={"max_duration": seconds})
        decide = (lambda e2e, done: bounds_decided(self.bounds(done)))  # noqa: E731
        records, begin, reason, errors, extra = run_open_processes(
            self.pool, schedule, self.workload, settings, self.target, progress, decide, min_s)
        # the client's lag judged as for a server cell: TTFT from the scheduled send
        # against the same from the actual send
        figures = summarise(records, settings, self.slo, self.streamed, begin)
        effect = figures["client_lag_effect"]
        if effect is not None and effect > MAX_LAG_EFFECT:
            extra["valid"] = False
            extra["invalid_reasons"] = extra["invalid_reasons"] + [
                f"at {rate:g}/s the client sent late (p99 "
                f"{figures['send_lag_ms']['client']['p99']} ms): TTFT +{100 * effect:.1f}%"]
        return _StepRun(records, begin, reason, errors, extra, figures)

    def judge(self, runs) -> str:
        records = [r for run in runs for r in run.records]
        timeouts = sum(run.extra["timeouts"] for run in runs)
        return judge_bounds(self.bounds(records, timeouts))


class _StepRun:
    """One step's run as search.py reads it (latencies_ns, extra, wall_ns), and its records."""

    def __init__(self, records, begin, reason, errors, extra, figures):
        self.records, self.begin, self.stop_reason, self.errors = records, begin, reason, errors
        self.extra, self.figures = extra, figures
        self.latencies_ns = e2e_ns(records)
        self.wall_ns = int(extra["wall_s"] * 1e9)
