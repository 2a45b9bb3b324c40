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

Capacity on goodput (`scenario: capacity` with a generative SLO): workload/rate_search.py's search
(double, confirm a failure, bisect to 5%), each step judged on every bound of the SLO with
the same early-stopping and settling rule as a single latency bound (CapacitySteps).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import itertools
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..core.result import Latency, Result, Stop, Throughput
from ..core.stats import relative_half_width
from ..serving.lean_stream import LeanStreamSUT, build_stream_request, connections_for
from ..serving.openai_client import (OpenAIClient, OpenAIError, RequestRecord, api_key,
                                     error_text)
from . import arrivals
from .engine import Window, finish, finite, warm_up
from .failures import ErrorLog
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
from .rate_search import run_capacity
from .stopping import CHECK_EVERY_NS, StoppingRule, show_progress

CHUNKS_PER_PROCESS = 6000       # chunks/s one client event loop parses at about half a core


# ----------------------------------------------------------------------------- the client side

class _Loop:
    """An asyncio event loop in its own thread, with the client on it."""

    def __init__(self, url, api, stream, api_key_env, timeout):
        self.url, self.api, self.stream, self.timeout = url, api, stream, timeout
        self.api_key_env = api_key_env
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
    """The open loop's system under test (workload/open_loop.py's protocol) over aiohttp:
    issue(i) stamps the dispatch time and hands request i to the event loop; the request's
    records fill in there, and complete(i[, exc]) reports it back to the open loop. The lean
    client (serving/lean_stream.py) has the same attributes and is preferred where it fits."""

    client = "aiohttp"

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

    def parse(self) -> None:
        """The records are parsed as they stream here: nothing left to do."""


def open_loop_sut(loop: _Loop, prepared, n: int, rate: float | None):
    """The open loop's client: for streamed requests over plain HTTP with httptools present,
    the lean one (prepared requests written by the issuer, serving/lean_stream.py says why);
    else aiohttp's on the event loop."""
    lean = (loop.stream and not loop.url.startswith("https://")
            and importlib.util.find_spec("httptools") is not None)
    if not lean:
        return GenerativeSUT(loop, prepared, n)
    key = api_key(loop.api_key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else None
    requests = [build_stream_request(loop.url, loop.api, p.body, headers) for p in prepared]
    return LeanStreamSUT(loop.url, requests, lambda i: _record(i, prepared), n, loop.timeout,
                         loop.api == "chat", connections_for(rate))


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
    if workload.scenario_def.rate_search:
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
    sut = open_loop_sut(loop, prepared, len(schedule), workload.rate)
    samples = run_open_loop(sut, schedule, settings, workload.timeout, workload.send_lag_bound,
                            target, progress)
    sut.parse()
    samples.extra["open_loop_client"] = sut.client
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

    rule = StoppingRule(settings, target)
    begin = clock()
    future = asyncio.run_coroutine_threadsafe(main(), loop.loop)
    while True:
        time.sleep(CHECK_EVERY_NS / 1e9)
        elapsed = clock() - begin
        e2e = np.array([(r.chunk_ns[-1] if r.chunk_ns else r.end_ns) - r.scheduled_ns
                        for r in list(records) if r.ok], dtype=np.int64)
        reason = ("max_queries" if future.done() else
                  rule.limit(elapsed, 0) or rule.check(elapsed, e2e, errors))
        if reason:
            break
        show_progress(progress, elapsed, e2e)
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


def _one_by_one(loop: _Loop, prepared):
    """One request at a time, cycling through the prepared ones: the warm-up's query."""
    counter = itertools.count()

    def one():
        rec = RequestRecord(index=-1)
        loop.run(_send(loop.client, rec, prepared[next(counter) % len(prepared)].body, None))
    return one


@dataclass
class GenerativeRun:
    """What a generative scenario's generator drives: the client's event loop, the prepared
    requests, the client processes (None: the in-process client), the cell's load."""
    loop: _Loop
    prepared: list
    pool: ClientProcesses | None
    workload: object
    settings: object
    target: float
    slo: dict | None
    stream: bool
    progress: object = None


@dataclass
class Measured:
    """A generative generator's output: the request records, the window's start (ns), why
    it stopped, the failed requests and, for open loops, the open loop's figures."""
    records: list
    begin: int
    reason: str
    errors: ErrorLog
    open_extra: dict | None = None


# The generators the registry names (core/scenarios/: `generative=`), one per scenario.

def run_single_stream(run: GenerativeRun) -> Measured:
    return Measured(*run_concurrency(run.loop, run.prepared, 1, run.settings, run.target,
                                     run.progress))


def run_concurrency_scenario(run: GenerativeRun) -> Measured:
    return Measured(*run_concurrency(run.loop, run.prepared, run.workload.concurrency,
                                     run.settings, run.target, run.progress))


def run_server(run: GenerativeRun) -> Measured:
    if run.pool is not None:
        return Measured(*run_open_processes(run.pool, _schedule(run.workload, run.settings),
                                            run.workload, run.settings, run.target,
                                            run.progress))
    records, begin, samples = run_open(run.loop, run.prepared, run.workload, run.settings,
                                       run.target, run.progress)
    return Measured(records, begin, samples.stop_reason, samples.errors, samples.extra)


def run_capacity_search(run: GenerativeRun) -> Measured:
    """Capacity on goodput: the rate search with steps sent by the client processes. The
    figures are the highest passing step's (the last step's if none passed); the search's
    steps and bracket go with them, as for other capacity cells."""
    steps = CapacitySteps(run.pool, run.workload, run.settings, run.target, run.slo, run.stream)
    best = run_capacity(None, run.settings, run.workload, run.target, run.progress,
                        stepper=steps)
    return Measured(best.records, best.begin, best.stop_reason, best.errors, best.extra)


def _generator(workload) -> Callable[[GenerativeRun], Measured]:
    """The scenario's generator for OpenAI streams, as the registry names it."""
    module, _, name = workload.scenario_def.generative.partition(":")
    return getattr(importlib.import_module(module), name)


def _request_count(workload, settings) -> int:
    if workload.scenario_def.open_loop:
        count = int((workload.rate or 1) * settings.max_duration * 1.3) + 16
    else:
        count = 1024        # closed loop: the run cycles through these
    return count if settings.max_queries is None else min(count, settings.max_queries)


def measure_generative(url: str, model_name: str, cell, progress=None):
    """Measure one generative cell against the server at url; returns a Result. The engine's
    steps (workload/engine.py): warm-up, the window, the scenario's generator, the summary
    and the judgements."""
    serving, workload, settings = cell.serving, cell.workload, cell.settings
    prompts = workload.prompts or Prompts()
    slo = dict(workload.slo) if workload.slo else None
    # E2E p99 unless the spec says otherwise, in every scenario (as before the registry)
    target = settings.target_percentile or 99.0
    loop = _Loop(url, serving.api, serving.stream, serving.api_key_env, workload.timeout)
    pool = None
    try:
        extras_for, note = _probe(loop, prompts, serving.api, model_name, serving.stream,
                                  settings.seed, workload.timeout)
        prepared = prepare(prompts, serving.api, model_name, serving.stream,
                           _request_count(workload, settings), settings.seed, extras_for)
        warm = warm_up(_one_by_one(loop, prepared), settings.warmup)
        procs = client_processes(workload, prompts) if workload.scenario_def.open_loop else 0
        if procs:   # started before the window: spawning is not part of the measurement
            pool = ClientProcesses(procs, url, serving.api, serving.stream,
                                   serving.api_key_env, workload.timeout, prepared)
        run = GenerativeRun(loop, prepared, pool, workload, settings, target, slo,
                            serving.stream, progress)
        # as for every cell: a collection inside the window holds the GIL, and the client's
        # event loop with it (measured: 50-90 ms pauses at 150 req/s in
        # benchmarks/generative_client_lag.py, the in-process client's lag with them)
        generate = _generator(workload)     # its import, if first, before the window
        with Window() as window:
            measured = generate(run)
    finally:
        loop.close()
        if pool is not None:
            pool.close()
    load = _load_figures(workload, measured, procs, pool)
    return _generative_result(cell, measured, load, window, warm, note)


def _load_figures(workload, measured: Measured, procs: int, pool) -> dict:
    load = {"scenario": workload.scenario}
    if measured.open_extra is not None:
        load.update(measured.open_extra)
        load["target_rate"] = workload.rate
    else:
        load["concurrency"] = workload.concurrency or 1     # the field of concurrency only
        load.setdefault("valid", True)
        load.setdefault("invalid_reasons", [])
    load["client_processes"] = procs
    if pool is not None:
        load["client_cpu_s"] = [round(c, 3) for c in pool.cpu_s]
    return load


def _judge_client_lag(load: dict, figures: dict, workload, target: float) -> None:
    """An open loop whose client sent late enough to move TTFT is invalid (the limit of
    workload/open_loop.py)."""
    effect = figures["client_lag_effect"]
    if effect is not None and effect > MAX_LAG_EFFECT and workload.scenario_def.open_loop:
        load["valid"] = False
        load["invalid_reasons"] = list(load.get("invalid_reasons") or []) + [
            f"the client's event loop sent late (p99 {figures['send_lag_ms']['client']['p99']} "
            f"ms): TTFT p{target:g} +{100 * effect:.1f}% over the same timed from the "
            f"actual sends (limit {100 * MAX_LAG_EFFECT:g}%)"]
    load["lag_effect_client"] = effect


def _generative_result(cell, measured: Measured, load: dict, window: Window, warm,
                       note) -> Result:
    serving, workload, settings = cell.serving, cell.workload, cell.settings
    slo = dict(workload.slo) if workload.slo else None
    target = settings.target_percentile or 99.0
    records = measured.records
    figures = summarise(records, settings, slo, serving.stream, measured.begin)
    m = request_metrics(records, serving.stream)
    e2e = metric_values(m, "e2e")
    _judge_client_lag(load, figures, workload, target)
    if note:
        figures["note"] = note
    window_s = figures["window_s"] or None
    result = Result(
        scenario=workload.scenario, batch_size=1,
        latency_ms=Latency.from_ns(e2e, settings.percentiles, settings.confidence),
        throughput=Throughput(queries_per_s=figures["requests_per_s"],
                              samples_per_s=figures["requests_per_s"]),
        stop=Stop(reason=measured.reason, target_percentile=target,
                  ci_half_width_rel=finite(relative_half_width(e2e, target,
                                                               settings.confidence)),
                  ci_width=settings.ci_width),
        duration_s=window_s, wall_s=window_s,
        warmup={"queries": warm[0], "seconds": round(warm[1], 4)}, process=window.process)
    result.window = window.bounds
    result.generative = figures
    if slo:
        result.slo = slo_verdict(m, slo)
    if workload.keep_requests:
        result.requests = [r.to_json(measured.begin) for r in records]
    # failed requests: the open loop's log holds errors and timeouts alike
    return finish(result, load, measured.errors, settings, workload)
