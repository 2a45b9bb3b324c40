"""The one measurement engine: every place that measures (in-process runners, served cells,
generative serving, each paired side, each capacity step, each configuration-search trial)
goes through these steps, written once:

    warm_up          queries before the window, excluded from the samples
    Window           the measured window: garbage collection held off, the process (and GPU)
                     monitors and the device timer around it only, its wall-clock bounds
    the scenario     its load generator, found in the registry (core/scenarios/), drives the
                     system under test; every generator asks workload/stopping.py when to stop
    summarise        Samples -> Result: latency with its bounds, throughput with its interval,
                     why it stopped, busy and wall time
    finish           the SLO verdict, validity, the error judgement, a search's failure

The system under test is a zero-argument callable (one call = one query of batch_size samples)
and, for open-loop scenarios, a `make_sut()` factory of an asynchronous SUT (workload/open_loop.py
says what one must do). Where the callable comes from (an in-process runner, a server's client)
is the caller's business: run/ builds it for a cell, the fixture for a hand-written test.
"""

from __future__ import annotations

import gc
import importlib
import time
from itertools import repeat
from typing import Callable

import numpy as np

from ..core.early_stopping import verdict
from ..core.result import Latency, Result, Stop, Throughput
from ..core.stats import load_lazy_parts, rate_interval
from ..measure.monitors import ProcessMonitor
from ..spec import Workload
from .failures import ErrorLog, judge_errors
from .open_loop import InProcessSUT
from .samples import Progress, Samples, SystemUnderTest


def warm_up(fn: Callable[[], object], warmup) -> tuple[int, float]:
    """Call fn `warmup` times (an int) or for `warmup` seconds; returns (queries, seconds)."""
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


class Window:
    """The measured window. On entry: a full collection, then none until exit (a collection
    pause inside the window would be the harness's fault), the device timer reset, the GPU
    and process monitors started; on exit they stop, so that they cover the window only.
    server_ports: a local server's ports, whose processes the monitor counts as the SUT."""

    def __init__(self, server_ports: set[int] | None = None, gpu=None, timer=None):
        self.monitor = ProcessMonitor(server_ports)
        self.gpu, self.timer = gpu, timer
        self.process: dict = {}
        self.gpu_stats: dict | None = None
        self.start = self.end = None

    def __enter__(self) -> "Window":
        load_lazy_parts()           # one-time imports belong before the window, not in it
        self._gc_was_enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        if self.timer is not None:
            self.timer.reset()      # device-time samples from the measured window only
        if self.gpu is not None:
            self.gpu.start()
        self.monitor.start()
        self.start = time.time()    # wall clock: windows compare across processes
        return self

    def __exit__(self, *exc) -> None:
        self.end = time.time()
        try:
            self.process = self.monitor.stop()
            if self.gpu is not None:
                self.gpu_stats = self.gpu.stop()
        finally:
            if self._gc_was_enabled:
                gc.enable()

    @property
    def bounds(self) -> dict:
        return {"start": self.start, "end": self.end}


def generator(workload: Workload) -> Callable[..., Samples]:
    """The scenario's load generator, as its declaration in the registry names it."""
    module, _, name = workload.scenario_def.generator.partition(":")
    return getattr(importlib.import_module(module), name)


def target_percentile(settings, workload: Workload) -> float:
    return settings.target_percentile or workload.scenario_def.target


def measure_callable(fn: Callable[[], object], settings, scenario="single_stream",
                     batch_size: int = 1, progress: Progress | None = None, gpu=None,
                     instances: int = 1, make_sut=None, thread_init=None, timer=None,
                     server_ports: set[int] | None = None) -> Result:
    """Run the scenario on fn (one call = one query of batch_size samples) and summarise.

    scenario: a name, or a spec Workload (server and concurrency need its fields).
    gpu: an optional GpuMonitor, started and stopped around the measured window only.
    thread_init: run first in every thread the scenario starts to call fn (thread-local
    runtime state, e.g. torch's inference mode).
    timer: an optional DeviceTimer (measure/device_timer.py) that fn is the `fn` of: reset after
    the warm-up, collected after the window (its probes run then, outside the window) into
    result.device_time.
    The result's status is "failed", with the reason, when no query succeeded or the share
    of failed queries is over settings.max_error_rate.
    """
    workload = scenario if isinstance(scenario, Workload) else Workload(scenario=scenario)
    if make_sut is None:
        def make_sut():
            return InProcessSUT(fn, instances, thread_init)
    sut = SystemUnderTest(call=fn, make_async=make_sut, thread_init=thread_init)
    warm = warm_up(fn, settings.warmup)
    measured = settings.model_copy(update={"warmup": 0})
    target = target_percentile(settings, workload)
    generate = generator(workload)      # its import, if first, before the window
    with Window(server_ports, gpu, timer) as window:
        samples = generate(sut, measured, workload, target, progress)
    result = summarise(samples, settings, workload.scenario, batch_size, window, warm)
    finish(result, samples.extra, samples.errors, settings, workload, samples.latencies_ns)
    _device_figures(result, window, timer, batch_size)
    return result


def summarise(samples: Samples, settings, scenario: str, batch_size: int, window: Window,
              warm: tuple[int, float | None]) -> Result:
    """Samples -> Result: latency with its bounds, throughput (over the busy time) with its
    batch-means interval, why the run stopped, busy and wall time, the window's figures."""
    n = len(samples.ends_ns)
    busy_s = samples.busy_ns / 1e9
    qps = n / busy_s if busy_s > 0 and n else None
    throughput = Throughput(queries_per_s=qps, samples_per_s=qps * batch_size if qps else None)
    factors = rate_interval(samples.ends_ns, settings.confidence) if qps else None
    if factors is not None:     # batch means over ten spans of the window (core/stats.py)
        throughput.lower, throughput.upper = (float(qps * batch_size * f) for f in factors)
    result = Result(
        scenario=scenario,
        batch_size=batch_size,
        latency_ms=Latency.from_ns(samples.latencies_ns, settings.percentiles,
                                   settings.confidence),
        throughput=throughput,
        stop=Stop(reason=samples.stop_reason, target_percentile=samples.target_percentile,
                  ci_half_width_rel=finite(samples.ci_half_width_rel),
                  ci_width=settings.ci_width),
        duration_s=round(busy_s, 6),
        wall_s=round(samples.wall_ns / 1e9, 6),
        warmup={"queries": warm[0],
                "seconds": round(warm[1], 4) if warm[1] is not None else None},
        process=window.process,
    )
    result.window = window.bounds
    return result


def finish(result: Result, load: dict | None, errors: ErrorLog, settings, workload: Workload,
           latencies_ns: np.ndarray | None = None) -> Result:
    """The judgements every measurement ends with: the load figures and their validity, the
    SLO verdict (one latency bound; a generative SLO is judged by its own code and set
    before), the error judgement, and a rate search that proved nothing failing the cell."""
    if load:
        result.load = load
        result.valid = load.get("valid", True)
    slo = workload.slo_target()
    if slo is not None and latencies_ns is not None:
        result.slo = verdict(latencies_ns, int(slo[1] * 1e9), slo[0])
    judge_errors(result, errors, settings.max_error_rate)
    failure = (load or {}).get("search_failure")
    if failure and result.status != "failed":
        result.status, result.reason = "failed", failure
    return result


def _device_figures(result: Result, window: Window, timer, batch_size: int) -> None:
    stats = window.gpu_stats
    if stats is not None:
        samples_done = result.latency_ms.n * batch_size
        if stats.get("energy_j") is not None and samples_done:
            stats["energy_per_sample_j"] = stats["energy_j"] / samples_done
        result.gpu = stats
    if timer is not None:
        result.device_time = timer.collect(result.latency_ms.n, result.duration_s,
                                           result.scenario)


def finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def measure_runner(runner, inputs: dict[str, np.ndarray], settings, scenario,
                   batch_size: int, progress: Progress | None = None, gpu=None,
                   instances: int = 1) -> Result:
    fn = runner.prepare(inputs)
    fn()                    # first call outside warm-up accounting: lazy init, allocation
    runner.synchronize()
    result = measure_callable(fn, settings, scenario, batch_size, progress, gpu, instances,
                              thread_init=getattr(runner, "enter_thread", None),
                              timer=getattr(runner, "device_timer", None))
    result.runtime = runner.info()
    return result
