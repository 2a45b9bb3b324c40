"""Measure one thing: a cell (model x runtime x ... from a spec) or any callable/Runner.

Order per cell: load the model on the device (conversion cached), generate seeded inputs from
its signature, warm up, measure with the scenario's loop while the process monitor watches,
then turn samples into statistics. Only the loop runs inside the measured window.
"""

from __future__ import annotations

import gc
from typing import Callable

import numpy as np

from ..results.model import Latency, Result, Stop, Throughput
from ..runtimes import runner_class
from ..runtimes.base import LoadContext
from ..workload.closed_loop import SCENARIOS, Progress
from .monitors import ProcessMonitor


def measure_callable(fn: Callable[[], object], settings, scenario: str = "single_stream",
                     batch_size: int = 1, progress: Progress | None = None) -> Result:
    """Run the scenario on fn (one call = one query of batch_size samples) and summarise."""
    loop = SCENARIOS[scenario]
    monitor = ProcessMonitor()
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()            # a collection pause inside the window would be the harness's fault
    try:
        monitor.start()
        samples = loop(fn, settings, scenario, progress)
        process = monitor.stop()
    finally:
        if gc_was_enabled:
            gc.enable()
    return summarise(samples, settings, scenario, batch_size, process)


def summarise(samples, settings, scenario, batch_size, process) -> Result:
    n = len(samples.ends_ns)
    busy_s = samples.busy_ns / 1e9
    qps = n / busy_s if busy_s > 0 and n else None
    return Result(
        scenario=scenario,
        batch_size=batch_size,
        latency_ms=Latency.from_ns(samples.latencies_ns, settings.percentiles, settings.confidence),
        throughput=Throughput(queries_per_s=qps, samples_per_s=qps * batch_size if qps else None),
        stop=Stop(reason=samples.stop_reason, target_percentile=samples.target_percentile,
                  ci_half_width_rel=_finite(samples.ci_half_width_rel), ci_width=settings.ci_width),
        duration_s=round(busy_s, 6),
        wall_s=round(samples.wall_ns / 1e9, 6),
        warmup={"queries": samples.warmup_queries, "seconds": round(samples.warmup_s, 4)},
        process=process,
    )


def _finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def measure_runner(runner, inputs: dict[str, np.ndarray], settings, scenario: str,
                   batch_size: int, progress: Progress | None = None) -> Result:
    fn = runner.prepare(inputs)
    fn()                    # first call outside warm-up accounting: lazy init, allocation
    runner.synchronize()
    result = measure_callable(fn, settings, scenario, batch_size, progress)
    result.runtime = runner.info()
    return result


def run_cell(cell, cache, progress: Progress | None = None) -> Result:
    """Measure one cell. Raises RuntimeUnavailable (-> skip) or any error (-> failed)."""
    runner = runner_class(cell.runtime)()
    context = LoadContext(cache=cache, seed=cell.settings.seed)
    try:
        runner.load(cell.model, cell.device, cell.precision, context)
        inputs = context.signature.generate(cell.batch_size, seed=cell.settings.seed)
        result = measure_runner(runner, inputs, cell.settings, cell.workload.scenario,
                                cell.batch_size, progress)
    finally:
        runner.close()
    result.model = {"label": cell.model_label, **context.model_info,
                    "inputs": {t.name: {"shape": [cell.batch_size, *t.shape], "dtype": t.dtype}
                               for t in context.signature.inputs}}
    return result
