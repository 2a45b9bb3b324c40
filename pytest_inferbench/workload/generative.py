"""Generative serving: issuing the requests of an OpenAI-compatible benchmark and driving its
scenario (the metrics are defined in workload/generative_metrics.py).

Issuing: the open loop is the harness's own (workload/open_loop.py): an issuer thread sleeps
to each scheduled time and hands the request to the client's event loop in another thread,
so it never waits behind SSE parsing; garbage collection is off during the window (a pause
holds the GIL and stops the loop: that, measured, was the client's lag). Or, with
`client_processes: N` (and for the capacity search), N worker processes each send their
share of the schedule and parse their own streams (workload/generative_clients.py). Either
way the issuer's lag (scheduled to handed over / timer fired) and the client's (scheduled to
the request about to be written) are both reported, and a run whose client lag moved TTFT
is flagged invalid.

Capacity on goodput (`scenario: capacity` with a generative SLO): workload/search.py's search
(double, confirm a failure, bisect to 5%), each step judged on every bound of the SLO with
the same early-stopping and settling rule as a single latency bound (CapacitySteps).
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import threading
import time

import numpy as np

from ..core.result import Latency, Result, Stop, Throughput
from ..core.stats import relative_half_width
from ..measure.monitors import ProcessMonitor
from ..serving.openai_client import OpenAIClient, OpenAIError, RequestRecord, error_text
from . import arrivals
from .failures import ErrorLog, judge_errors
from .generative_clients import CapacitySteps, ClientProcesses, run_open_processes
from .generative_metrics import (
    MAX_LAG_EFFECT,
    metric_values,
    request_metrics,
    slo_verdict,
    summarise,
)
from .open_loop import run_open_loop
from .prompts import Prompts, prepare
from .search import run_capacity

_CHECK_EVERY_S = 0.25
CHUNKS_PER_PROCESS = 6000       # chunks/s one client event loop parses at about half a core


# ----------------------------------------------------------------------------- the client side

class _Loop:
    """An asyncio event loop in its own thread, with the client on it."""

    def __init__(self, url, api, stream, api_key_env, timeout):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="inferbench-openai",
                                       daemon=True)
        self.thread.start()
        self.client = self.run(self._make(url, api, stream, api_key_env, timeout))

    @staticmethod
    async def _make(*args):
        return OpenAIClient(*args)

    def run(self, coro, timeout=None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        async def shutdown():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.client.close()
        try:
            self.run(shutdown(), timeout=10)
        except Exception:  # noqa: BLE001 - a stuck connection must not hang the session
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def _record(i, prepared) -> RequestRecord:
    p = prepared[i % len(prepared)]
    return RequestRecord(index=i, expected_prompt_tokens=p.expected_prompt_tokens,
                         max_tokens=p.max_tokens, conversation=p.conversation, turn=p.turn)


async def _send(client, rec, body, errors: ErrorLog | None):
    try:
        await client.send(rec, body)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failed request is a result
        rec.error = error_text(exc)
        if errors is not None:
            errors.record(exc)
        return exc
    return None


class GenerativeSUT:
    """The open loop's system under test (workload/open_loop.py's protocol): issue(i) stamps
    the dispatch time and hands request i to the event loop; the request's records fill in
    there, and complete(i[, exc]) reports it back to the open loop."""

    def __init__(self, loop: _Loop, prepared, n: int):
        self.loop, self.prepared = loop, prepared
        self.records: list[RequestRecord | None] = [None] * n
        self.dispatched = np.zeros(n, dtype=np.int64)
        self.good: list[int] = []

    def start(self, complete):
        loop, client, prepared = self.loop.loop, self.loop.client, self.prepared
        records, good, clock, dispatched = self.records, self.good, time.perf_counter_ns, \
            self.dispatched

        async def one(i):
            rec = records[i] = _record(i, prepared)
            exc = await _send(client, rec, prepared[i % len(prepared)].body, None)
            if exc is None:
                good.append(i)
                complete(i)
            else:
                complete(i, exc)

        spawn = lambda i: loop.create_task(one(i))   # noqa: E731

        def issue(i):
            dispatched[i] = clock()
            loop.call_soon_threadsafe(spawn, i)
        return issue

    def stop(self):
        async def cancel():
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()
        try:
            self.loop.run(cancel(), timeout=5)
        except Exception:  # noqa: BLE001
            pass


def _schedule(workload, settings) -> np.ndarray:
    schedule = arrivals.schedule(workload.arrival, workload.rate, settings.max_duration,
                                 seed=settings.seed, burstiness=workload.burstiness,
                                 on_s=workload.on, off_s=workload.off, trace=workload.trace)
    if settings.max_queries is not None:
        schedule = schedule[:settings.max_queries]
    return schedule


def client_processes(workload, prompts) -> int:
    """How many client processes send the open loop: the spec's `client_processes`; else one
    for a capacity search (it sends from processes), and for a server cell as many as the
    expected chunk rate needs at CHUNKS_PER_PROCESS each, when this process may use more
    than one core; else none. Measured (benchmarks/generative_client_lag.py, one client
    core): one in-process event loop held its schedule to 300 req/s (7,500 chunks/s, 0.55 of
    a core); a client process on the same core did no better, two did worse. Processes add
    cores, not speed on one."""
    if workload.client_processes is not None:
        return workload.client_processes
    if workload.scenario == "capacity":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))     # the client's set when the server is pinned
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if workload.rate is None or cores < 2:
        return 0
    chunks = workload.rate * prompts.output_tokens.mean
    return 0 if chunks <= CHUNKS_PER_PROCESS else min(cores, math.ceil(chunks /
                                                                        CHUNKS_PER_PROCESS))


def run_open(loop: _Loop, prepared, workload, settings, target, progress):
    """The server scenario: the harness's open loop with the generative SUT. Returns
    (records, window start ns, the open loop's Samples)."""
    schedule = _schedule(workload, settings)
    sut = GenerativeSUT(loop, prepared, len(schedule))
    samples = run_open_loop(sut, schedule, settings, workload.timeout, workload.send_lag_bound,
                            target, progress)
    # the open loop's start, exactly: its successful queries are ours, scheduled at
    # start + schedule[i] (its starts_ns are those scheduled times, in index order)
    good = sorted(sut.good)
    if len(samples.starts_ns) and len(good) >= len(samples.starts_ns):
        begin = int(samples.starts_ns[0] - schedule[good[0]])
    else:   # nothing succeeded: the earliest dispatch bounds it (lag only, for the report)
        issued = np.nonzero(sut.dispatched)[0]
        begin = int((sut.dispatched[issued] - schedule[issued]).min()) if len(issued) else 0
    records = []
    for i, rec in enumerate(sut.records):
        if rec is None:
            if not sut.dispatched[i]:
                continue
            rec = _record(i, prepared)    # dispatched, never started: counted as a timeout
        if not rec.ok and rec.error is None:
            rec.error = "no answer before the run ended (counted as a timeout)"
        rec.scheduled_ns = begin + int(schedule[i])
        rec.dispatched_ns = int(sut.dispatched[i])
        records.append(rec)
    return records, begin, samples


def run_concurrency(loop: _Loop, prepared, clients: int, settings, target, progress):
    """N clients in closed loop: each sends its next request when the previous one ended;
    a request's scheduled time is the moment its client was ready. Returns (records, window
    start, stop reason, ErrorLog)."""
    clock = time.perf_counter_ns
    errors = ErrorLog()
    records: list[RequestRecord] = []
    stop = threading.Event()
    counter = iter(range(1 << 62))
    client = loop.client

    async def worker():
        while not stop.is_set():
            i = next(counter)
            if settings.max_queries is not None and i >= settings.max_queries:
                return
            rec = _record(i, prepared)
            rec.scheduled_ns = rec.dispatched_ns = clock()
            await _send(client, rec, prepared[i % len(prepared)].body, errors)
            records.append(rec)

    async def main():
        await asyncio.gather(*(worker() for _ in range(clients)))

    begin = clock()
    future = asyncio.run_coroutine_threadsafe(main(), loop.loop)
    min_ns, max_ns = settings.min_duration * 1e9, settings.max_duration * 1e9
    reason = "max_duration"
    while True:
        time.sleep(_CHECK_EVERY_S)
        now = clock()
        done = list(records)
        e2e = np.array([(r.chunk_ns[-1] if r.chunk_ns else r.end_ns) - r.scheduled_ns
                        for r in done if r.ok], dtype=np.int64)
        if future.done():
            reason = "max_queries"
            break
        if now - begin >= max_ns:
            break
        if errors.budget_exceeded(len(e2e), settings.max_error_rate):
            reason = "errors"
            break
        if (now - begin >= min_ns and len(e2e) >= settings.min_queries and
                relative_half_width(e2e, target, settings.confidence) <= settings.ci_width):
            reason = "ci_converged"
            break
        if progress is not None and len(e2e):
            progress((now - begin) / 1e9, len(e2e), float(np.percentile(e2e, 99)) / 1e6)
    stop.set()
    future.cancel()       # requests still streaming are dropped, not counted
    return list(records), begin, reason, errors


# ----------------------------------------------------------------------------- the cell

def _probe(loop: _Loop, prompts, api, model, stream, seed, timeout):
    """One request before anything is measured: the server is reachable and answers, and it
    accepts `ignore_eos`/`min_tokens` (else they are dropped and the result says so).
    Returns (extras_for, note)."""

    def with_extras(max_tokens):
        return {"ignore_eos": True, "min_tokens": max_tokens}
    extras = with_extras if prompts.ignore_eos else None
    note = None
    for attempt in (extras, None) if extras else (None,):
        (p,) = prepare(prompts, api, model, stream, 1, seed, attempt)
        rec = RequestRecord(index=-1)
        exc = loop.run(_send(loop.client, rec, p.body, None), timeout + 5)
        if exc is None:
            return attempt, note
        if attempt is not None and isinstance(exc, OpenAIError) and exc.status and \
                400 <= exc.status < 500:
            note = (f"the server refused ignore_eos/min_tokens ({exc}): output lengths are "
                    f"the model's own, up to max_tokens")
            continue
        raise RuntimeError(f"OpenAI-compatible server at {loop.client.endpoint}: "
                           f"{rec.error or exc}") from None
    raise AssertionError("unreachable")


def _warmup(loop: _Loop, prepared, warmup) -> tuple[int, float]:
    """Requests one at a time, by count or for a duration; excluded from the results."""
    t0 = time.perf_counter()
    n = 0
    while (n < warmup) if isinstance(warmup, int) else (time.perf_counter() - t0 < warmup):
        rec = RequestRecord(index=-1)
        loop.run(_send(loop.client, rec, prepared[n % len(prepared)].body, None))
        n += 1
    return n, time.perf_counter() - t0


def measure_generative(url: str, model_name: str, cell, progress=None):
    """Measure one generative cell against the server at url; returns a Result."""
    serving, workload, settings = cell.serving, cell.workload, cell.settings
    prompts = workload.prompts or Prompts()
    slo = dict(workload.slo) if workload.slo else None
    scenario = workload.scenario
    target = settings.target_percentile or 99.0
    loop = _Loop(url, serving.api, serving.stream, serving.api_key_env, workload.timeout)
    pool = None
    gc_was_enabled = gc.isenabled()
    try:
        extras_for, note = _probe(loop, prompts, serving.api, model_name, serving.stream,
                                  settings.seed, workload.timeout)
        if scenario == "server":
            count = int((workload.rate or 1) * settings.max_duration * 1.3) + 16
        else:
            count = 1024        # closed loop: the run cycles through these
        if settings.max_queries is not None:
            count = min(count, settings.max_queries)
        prepared = prepare(prompts, serving.api, model_name, serving.stream, count,
                           settings.seed, extras_for)
        warm_n, warm_s = _warmup(loop, prepared, settings.warmup)
        procs = client_processes(workload, prompts) if scenario in ("server", "capacity") else 0
        if procs:   # started before the window: spawning is not part of the measurement
            pool = ClientProcesses(procs, url, serving.api, serving.stream,
                                   serving.api_key_env, workload.timeout, prepared)
        monitor = ProcessMonitor()
        monitor.start()
        # as the engine does for every cell: a collection inside the window holds the GIL,
        # and the client's event loop with it (measured: 50-90 ms pauses at 150 req/s in
        # benchmarks/generative_client_lag.py, the in-process client's lag with them)
        gc.collect()
        gc.disable()
        window_start = time.time()
        open_extra = None
        if scenario == "capacity":
            steps = CapacitySteps(pool, workload, settings, target, slo, serving.stream)
            best = run_capacity(None, settings, workload, target, progress, stepper=steps)
            # the figures are the highest passing step's (the last step's if none passed);
            # the search's steps and bracket go with them, as for other capacity cells
            records, begin, errors = best.records, best.begin, best.errors
            reason, open_extra = best.stop_reason, best.extra
        elif scenario == "server" and procs:
            records, begin, reason, errors, open_extra = run_open_processes(
                pool, _schedule(workload, settings), workload, settings, target, progress)
        elif scenario == "server":
            records, begin, samples = run_open(loop, prepared, workload, settings, target,
                                               progress)
            reason, errors, open_extra = samples.stop_reason, samples.errors, samples.extra
        else:
            clients = workload.concurrency if scenario == "concurrency" else 1
            records, begin, reason, errors = run_concurrency(loop, prepared, clients, settings,
                                                             target, progress)
        window_end = time.time()
        process = monitor.stop()
    finally:
        if gc_was_enabled:
            gc.enable()
        loop.close()
        if pool is not None:
            pool.close()
    figures = summarise(records, settings, slo, serving.stream, begin)
    m = request_metrics(records, serving.stream)
    e2e = metric_values(m, "e2e")
    load = {"scenario": scenario}
    if open_extra is not None:
        load.update(open_extra)
        load["target_rate"] = workload.rate
    else:
        load["concurrency"] = workload.concurrency if scenario == "concurrency" else 1
        load.setdefault("valid", True)
        load.setdefault("invalid_reasons", [])
    effect = figures["client_lag_effect"]
    if effect is not None and effect > MAX_LAG_EFFECT and scenario in ("server", "capacity"):
        load["valid"] = False
        load["invalid_reasons"] = list(load.get("invalid_reasons") or []) + [
            f"the client's event loop sent late (p99 {figures['send_lag_ms']['client']['p99']} "
            f"ms): TTFT p{target:g} +{100 * effect:.0f}% over the same timed from the "
            f"actual sends (limit {100 * MAX_LAG_EFFECT:g}%)"]
    load["lag_effect_client"] = effect
    load["client_processes"] = procs
    if pool is not None:
        load["client_cpu_s"] = [round(c, 3) for c in pool.cpu_s]
    if note:
        figures["note"] = note
    window_s = figures["window_s"] or None
    result = Result(
        scenario=scenario, batch_size=1,
        latency_ms=Latency.from_ns(e2e, settings.percentiles, settings.confidence),
        throughput=Throughput(queries_per_s=figures["requests_per_s"],
                              samples_per_s=figures["requests_per_s"]),
        stop=Stop(reason=reason, target_percentile=target,
                  ci_half_width_rel=_finite(relative_half_width(e2e, target,
                                                                settings.confidence)),
                  ci_width=settings.ci_width),
        duration_s=window_s, wall_s=window_s,
        warmup={"queries": warm_n, "seconds": round(warm_s, 4)}, process=process,
        load=load, valid=load.get("valid", True))
    result.window = {"start": window_start, "end": window_end}
    result.generative = figures
    if slo:
        result.slo = slo_verdict(m, slo)
    if workload.keep_requests:
        result.requests = [r.to_json(begin) for r in records]
    # failed requests: the open loop's log holds errors and timeouts alike
    judge_errors(result, errors, settings.max_error_rate)
    failure = load.get("search_failure")
    if failure and result.status != "failed":
        result.status, result.reason = "failed", failure
    return result


def _finite(x):
    return None if x is None or not np.isfinite(x) else round(float(x), 6)
