"""Drive a system under test with a scenario and summarise what it measured: the warm-up,
the monitors around the measured window only, the scenario's load generator, then the
statistics, the SLO verdict and the error judgement of the Result.

The system under test is a zero-argument callable (one call = one query of batch_size samples)
or, for open-loop scenarios, a `make_sut()` factory of an asynchronous SUT (workload/open_loop.py
says what one must do). Where the callable comes from (an in-process runner, a server's client)
is the caller's business: run/ builds it for a cell, the fixture for a hand-written test.
"""

from __future__ import annotations

import gc
import time
from typing import Callable

import numpy as np

from ..core.early_stopping import verdict
from ..core.stats import rate_interval
from ..core.result import Latency, Result, Stop, Throughput
from ..measure.monitors import ProcessMonitor
from ..spec import Workload
from . import arrivals
from .closed_loop import DEFAULT_TARGET, SCENARIOS, Progress, warm_up
from .concurrency import run_concurrency
from .failures import judge_errors
from .open_loop import InProcessSUT, run_open_loop
from .search import run_capacity, run_ramp


def run_workload(fn, settings, workload, instances: int, progress, make_sut=None,
                  thread_init=None):
    """Dispatch to the scenario's load generator; returns Samples."""
    scenario = workload.scenario
    if scenario in SCENARIOS:
        return SCENARIOS[scenario](fn, settings, scenario, progress)
    if make_sut is None:
        def make_sut():
            return InProcessSUT(fn, instances, thread_init)
    target = settings.target_percentile or DEFAULT_TARGET.get(scenario, 99.0)
    if scenario == "server":
        schedule = arrivals.schedule(workload.arrival, workload.rate, settings.max_duration,
                                     seed=settings.seed, burstiness=workload.burstiness,
                                     on_s=workload.on, off_s=workload.off, trace=workload.trace)
        samples = run_open_loop(make_sut(), schedule, settings,
                                workload.timeout, workload.send_lag_bound, target, progress)
        samples.extra["target_rate"] = workload.rate
    elif scenario == "concurrency":
        samples = run_concurrency(fn, settings, workload.concurrency, target, progress,
                                  thread_init)
    elif scenario in ("ramp", "capacity"):
        search = run_ramp if scenario == "ramp" else run_capacity
        samples = search(make_sut, settings, workload, target, progress)
    else:
        raise ValueError(f"unknown scenario {scenario}")
    return samples


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
    scenario = workload.scenario
    monitor = ProcessMonitor(server_ports)   # a local server's port: its processes are the SUT
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()            # a collection pause inside the window would be the harness's fault
    gpu_stats = None
    try:
        # warm up before the monitors start: their window is the measured one only
        warm_n, warm_s = warm_up(fn, settings.warmup)
        measured = settings.model_copy(update={"warmup": 0})
        if timer is not None:
            timer.reset()       # device-time samples from the measured window only
        if gpu is not None:
            gpu.start()
        monitor.start()
        window_start = time.time()          # wall clock: windows compare across processes
        try:
            samples = run_workload(fn, measured, workload, instances, progress, make_sut,
                                   thread_init)
            samples.warmup_queries, samples.warmup_s = warm_n, warm_s
        finally:
            window_end = time.time()
            process = monitor.stop()
            if gpu is not None:
                gpu_stats = gpu.stop()
    finally:
        if gc_was_enabled:
            gc.enable()
    result = summarise(samples, settings, scenario, batch_size, process)
    result.window = {"start": window_start, "end": window_end}
    if samples.extra:
        result.load = samples.extra
        result.valid = samples.extra.get("valid", True)
    slo = workload.slo_target()
    if slo is not None:
        result.slo = verdict(samples.latencies_ns, int(slo[1] * 1e9), slo[0])
    if gpu_stats is not None:
        samples_done = result.latency_ms.n * batch_size
        if gpu_stats.get("energy_j") is not None and samples_done:
            gpu_stats["energy_per_sample_j"] = gpu_stats["energy_j"] / samples_done
        result.gpu = gpu_stats
    if timer is not None:
        result.device_time = timer.collect(result.latency_ms.n, result.duration_s, scenario)
    judge_errors(result, samples.errors, settings.max_error_rate)
    failure = samples.extra.get("search_failure")
    if failure and result.status != "failed":
        result.status, result.reason = "failed", failure
    return result


def summarise(samples, settings, scenario, batch_size, process) -> Result:
    n = len(samples.ends_ns)
    busy_s = samples.busy_ns / 1e9
    qps = n / busy_s if busy_s > 0 and n else None
    throughput = Throughput(queries_per_s=qps, samples_per_s=qps * batch_size if qps else None)
    factors = rate_interval(samples.ends_ns, settings.confidence) if qps else None
    if factors is not None:     # batch means over ten spans of the window (core/stats.py)
        throughput.lower, throughput.upper = (float(qps * batch_size * f) for f in factors)
    return Result(
        scenario=scenario,
        batch_size=batch_size,
        latency_ms=Latency.from_ns(samples.latencies_ns, settings.percentiles, settings.confidence),
        throughput=throughput,
        stop=Stop(reason=samples.stop_reason, target_percentile=samples.target_percentile,
                  ci_half_width_rel=_finite(samples.ci_half_width_rel), ci_width=settings.ci_width),
        duration_s=round(busy_s, 6),
        wall_s=round(samples.wall_ns / 1e9, 6),
        warmup={"queries": samples.warmup_queries, "seconds": round(samples.warmup_s, 4)},
        process=process,
    )


def _finite(x: float) -> float | None:
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
