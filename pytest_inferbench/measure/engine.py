"""Measure one thing: a cell (model x runtime x ... from a spec) or any callable/Runner.

Order per cell: load the model on the device (conversion cached), generate seeded inputs from
its signature, warm up, measure with the scenario's loop while the process monitor watches,
then turn samples into statistics. Only the loop runs inside the measured window.
"""

from __future__ import annotations

import gc
import time
from typing import Callable

import numpy as np

from ..results.model import Latency, Result, Stop, Throughput
from ..runtimes import runner_class
from ..runtimes.base import LoadContext, RuntimeUnavailable
from ..workload.closed_loop import SCENARIOS, Progress
from .monitors import ProcessMonitor


def _run_workload(fn, settings, workload, instances: int, progress, make_sut=None,
                  thread_init=None):
    """Dispatch to the scenario's load generator; returns Samples."""
    from ..workload import arrivals
    from ..workload.closed_loop import DEFAULT_TARGET
    from ..workload.concurrency import run_concurrency
    from ..workload.open_loop import InProcessSUT, run_open_loop
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
        from ..workload.search import run_capacity, run_ramp
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
    from ..spec import Workload
    workload = scenario if isinstance(scenario, Workload) else Workload(scenario=scenario)
    scenario = workload.scenario
    monitor = ProcessMonitor(server_ports)   # a local server's port: its processes are the SUT
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()            # a collection pause inside the window would be the harness's fault
    gpu_stats = None
    try:
        # warm up before the monitors start: their window is the measured one only
        from ..workload.closed_loop import _warmup
        warm_n, warm_s = _warmup(fn, settings.warmup)
        measured = settings.model_copy(update={"warmup": 0})
        if timer is not None:
            timer.reset()       # device-time samples from the measured window only
        if gpu is not None:
            gpu.start()
        monitor.start()
        window_start = time.time()          # wall clock: windows compare across processes
        try:
            samples = _run_workload(fn, measured, workload, instances, progress, make_sut,
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
        from .early_stopping import verdict
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


def judge_errors(result: Result, errors, max_error_rate: float) -> None:
    """Record failed queries in the result; fail it when nothing succeeded or too much failed.
    A cell that measured nothing never passes."""
    n = result.latency_ms.n
    result.errors = errors.to_json(n)
    first = errors.first()
    if not n:
        result.status = "failed"
        result.reason = "measured no successful query" + (f"; first error: {first}"
                                                           if first else "")
    elif errors.failed and result.errors["error_rate"] > max_error_rate:
        result.status = "failed"
        result.reason = (f"{first} ({errors.failed} of {result.errors['attempted']} queries "
                         f"failed: {errors.errors} errors, {errors.timeouts} timeouts; "
                         f"{100 * result.errors['error_rate']:.3g}% > max_error_rate "
                         f"{100 * max_error_rate:g}%)")


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


def require_serving(cell) -> None:
    """Raise RuntimeUnavailable (-> skip, saying what to install) when this machine lacks what
    the cell's serving system needs, or the server could not take its batch."""
    from ..runtimes.base import RuntimeUnavailable, require
    serving = cell.serving
    require("tritonclient", "pip install 'pytest-inferbench[serve]'")
    if serving.system == "triton":
        require("pytriton", "pip install 'pytest-inferbench[serve]' (nvidia-pytriton; its "
                            "Python backend needs a Python with a shared libpython)")
        if serving.max_batch_size and cell.batch_size > serving.max_batch_size:
            raise RuntimeUnavailable(f"batch size {cell.batch_size} is over the server's "
                                     f"max_batch_size {serving.max_batch_size}")
    if serving.system == "http":
        require("fastapi", "pip install 'pytest-inferbench[serve]'")


def reach_endpoint(cell):
    """A client of the cell's existing endpoint, after checking that it serves the model."""
    from ..serving.client import Endpoint, resolve_headers
    serving = cell.serving
    url = serving.url.split("://", 1)[-1].rstrip("/")
    endpoint = Endpoint(url, serving.model, serving.protocol, "endpoint",
                        headers=resolve_headers(serving.headers),
                        timeout=cell.workload.timeout, tensor_format=serving.tensor_format)
    problem = endpoint.problem()
    if problem:
        raise RuntimeError(f"endpoint {serving.url}: {problem}")
    return endpoint


def run_served_cell(cell, cache, progress: Progress | None = None, servers=None) -> Result:
    """A cell behind a server: launch it (or reuse the pool's, or reach the endpoint), check
    its outputs against the source model, measure through tritonclient, and split latency
    with Triton's statistics."""
    from ..serving.client import server_description
    from ..serving.pool import ServerPool
    serving = cell.serving
    require_serving(cell)
    from ..serving.affinity import pinned
    launched = {"reused": False, "launch_s": None, "cpu_affinity": None}
    own_pool = None
    if serving.system == "endpoint":
        endpoint = reach_endpoint(cell)
    else:
        if servers is None:     # called alone: a server for this cell only
            servers = own_pool = ServerPool()
        server, reused = servers.get(cell, cache.root)
        endpoint = server.endpoint(cell.workload.timeout)
        endpoint.tensor_format = serving.tensor_format
        launched = {"reused": reused, "launch_s": round(server.launch_s, 3)
                    if server.launch_s is not None else None,
                    "cpu_affinity": server.affinity}
    try:
        # the generator keeps off the launched server's CPUs while it measures
        with pinned((launched["cpu_affinity"] or {}).get("client")):
            result = _measure_served(cell, cache, endpoint, progress)
        # read while the server is up (a pool of this call's own stops it below)
        result.serving["server"] = server_description(cell, endpoint, launched,
                                                      result.serving.get("breakdown"))
    except BaseException:
        if servers is not None:
            servers.close()     # a server a cell failed on is in an unknown state
        raise
    finally:
        if own_pool is not None:
            own_pool.close()
    if result.status == "failed" and servers is not None:
        servers.close()
    result.serving.update(launched)
    return result


def served_inputs(cell, cache, endpoint) -> tuple[dict[str, np.ndarray], dict]:
    """(inputs, check): the query's arrays for this endpoint (from its metadata, the spec's
    `inputs` and `data`), and the check of its outputs against the cell's source model, made
    once before measuring (raises OutputMismatch when they disagree)."""
    from ..models.check import OutputMismatch, compare, reference_outputs, tolerance_for
    from ..models.signature import NAMED_VALUES, InputSignature
    from ..serving import inputs as endpoint_inputs
    serving = cell.serving
    seed = cell.settings.seed
    # where the metadata lists no inputs, serving.inputs declares them
    meta = endpoint_inputs.declared_metadata(endpoint.inputs_metadata(), serving.inputs)
    signature = endpoint_inputs.signature_from_metadata(meta, serving.inputs, cell.batch_size)
    # an attention mask of ones, token types of zero, as for in-process models
    signature = InputSignature(inputs=tuple(
        t.model_copy(update={"value": NAMED_VALUES[t.name]})
        if t.name in NAMED_VALUES and t.high is None and t.value is None else t
        for t in signature.inputs))
    if serving.data:
        inputs = endpoint_inputs.load_data(serving.data, signature, meta, cell.batch_size)
    else:
        inputs = endpoint_inputs.generate(signature, meta, cell.batch_size, seed)
    if cell.model is None:
        check = {"ok": None, "done": False,
                 "reason": "no source model: the server's outputs were not checked"}
    else:
        # the same outputs as the source model, once per cell, before measuring
        context = LoadContext(cache=cache, seed=seed)
        check_in = signature.generate(min(cell.batch_size, 16), seed=seed)
        ref_in = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
                  for k, v in check_in.items()}
        check = compare(endpoint.infer(check_in), reference_outputs(cell.model, ref_in, context),
                        tolerance_for(cell))
        check["reference"] = "source model fp32 cpu, through the server"
        if not check["ok"]:
            raise OutputMismatch(f"server outputs disagree with the source model: max relative "
                                 f"error {check.get('max_rel_err')} > {check['tolerance']}",
                                 check)
    return inputs, check


def _local_port(url: str) -> set[int] | None:
    """The endpoint's port when it is on this host (the monitor then counts exactly the
    process listening there, and its tree, as the system under test), else None."""
    import ipaddress
    import socket
    host, _, port = url.split("://", 1)[-1].split("/", 1)[0].rpartition(":")
    host = host.strip("[]")
    try:
        addresses = {ipaddress.ip_address(a[4][0]) for a in socket.getaddrinfo(host, None)}
        local = {ipaddress.ip_address(a[4][0])
                 for a in socket.getaddrinfo(socket.gethostname(), None)}
    except (OSError, ValueError):
        return None
    if port.isdigit() and all(a.is_loopback or a in local for a in addresses):
        return {int(port)}
    return None


def _measure_served(cell, cache, endpoint, progress) -> Result:
    from ..serving.client import StatisticsWindow, breakdown
    serving = cell.serving
    inputs, check = served_inputs(cell, cache, endpoint)
    from ..serving.client import server_message
    fn = endpoint.blocking_fn(inputs)
    warm_errors = []

    def warm():     # a failed query before the window is not the cell's end: the window counts
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - its own errors
            warm_errors.append(exc)
    warm()
    # outside the window: what one query costs the client besides the server
    try:
        overhead = endpoint.overhead(inputs)
    except Exception as exc:  # noqa: BLE001 - a failed query here is the window's business
        overhead = {"error": server_message(exc)}
    from ..workload.closed_loop import _warmup
    _warmup(warm, cell.settings.warmup)
    settings = cell.settings.model_copy(update={"warmup": 0})
    # the server's counters bracket the measured queries only: an open-loop client opens the
    # window after its own warm-up requests (and closes it at stop; a search's steps add up),
    # a closed-loop cell here, after the warm-up above
    window = StatisticsWindow(endpoint)
    scenario = cell.workload.scenario
    if scenario not in OPEN_LOOP:
        window.open()
    result = measure_callable(fn, settings, cell.workload, cell.batch_size, progress,
                              make_sut=lambda: endpoint.async_sut(inputs, window),
                              server_ports=_local_port(endpoint.url))
    if scenario not in OPEN_LOOP:
        window.close()
    if scenario in ("ramp", "capacity"):     # the client's figures are one step's
        split = breakdown(window.delta, None)
        if split:
            split["scope"] = (f"the server's counts over all {window.windows} steps of the "
                              f"search; the result's latency is one step's")
    else:
        split = breakdown(window.delta, result.latency_ms.mean, result.latency_ms.n,
                          (result.errors or {}).get("attempted"))
    note = window.note
    if split is None and note is None:
        note = ("the server's statistics counted no successful request in the window"
                if window.windows else "no statistics window was measured")
    fmt, why = endpoint.format()
    result.serving = {"system": serving.system, "protocol": serving.protocol,
                      "url": endpoint.url, "tensor_format": fmt, "tensor_format_reason": why,
                      "breakdown": split, "overhead": overhead}
    if split is None:
        result.serving["breakdown_note"] = note
    if endpoint.headers:
        result.serving["headers"] = sorted(endpoint.headers)    # names only, never values
    if warm_errors:
        result.serving["warmup_errors"] = {"count": len(warm_errors),
                                           "first": server_message(warm_errors[0])}
    result.model = {"label": cell.model_label, "check": check,
                    "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                               for k, v in inputs.items()},
                    "inputs_source": serving.data or "generated"}
    if not endpoint.inputs_metadata():
        result.model["inputs_declared"] = "serving.inputs: the endpoint's metadata lists none"
    result.runtime = {"name": cell.runtime if cell.model is not None else None,
                      "served_by": serving.label()}
    return result


def run_cell(cell, cache, progress: Progress | None = None, servers=None,
             paired_cells: int = 1, rootdir=None) -> Result:
    """Measure one cell. Raises RuntimeUnavailable (-> skip) or any error (-> failed).

    The runner's outputs are checked against the source model (once per artifact) before any
    time is spent measuring: numbers for a model that computes something else are worthless.
    servers: a ServerPool to reuse launched servers across consecutive cells (the session's).
    A cell with `ab` is measured in paired mode (measure/paired.py) against its baseline;
    paired_cells: how many such cells the session judges; rootdir: where a git baseline's
    repository is.
    """
    if getattr(cell, "ab", None) is not None:
        from .paired import run_paired_cell
        if servers is not None:
            servers.release_unless(cell)
        return run_paired_cell(cell, cache, progress, cells=paired_cells, rootdir=rootdir)
    if servers is not None:
        servers.release_unless(cell)      # no idle server beside another cell's measurement
    if cell.serving.system == "openai":     # generative serving: TTFT, ITL, TPOT, goodput
        from ..workload.generative import run_generative_cell
        return run_generative_cell(cell, cache, progress, servers)
    if cell.serving.system != "inprocess":
        return run_served_cell(cell, cache, progress, servers)
    from ..models.check import check_cell
    from .gpu_monitor import GpuMonitor
    runner = runner_class(cell.runtime)()
    threads, threads_note = _threads_for(cell)
    context = LoadContext(cache=cache, seed=cell.settings.seed, options=cell.runtime_options,
                          threads=threads)
    context.model = cell.model
    context.check_tolerance = getattr(cell.check, "tolerance", None)
    from ..models.check import OutputMismatch
    from ..models.inputs import model_inputs
    try:
        try:
            runner.load(cell.model, cell.device, cell.precision, context)
        except RuntimeUnavailable:
            raise                          # a skip, saying what is missing
        except Exception as exc:  # noqa: BLE001 - say which step failed, keep what it recorded
            raise CellStepError("loading the model", exc, context.model_info) from None
        try:
            check = check_cell(cell, runner, context, cache.root)
        except OutputMismatch as exc:      # recorded with the failed result, not lost
            result = Result(status="failed", reason=str(exc))
            result.model = _model_record(cell, context, exc.check)
            result.runtime = runner.info()
            return result
        inputs = model_inputs(cell.model, context.signature, cell.batch_size,
                              cell.settings.seed)
        gpu = GpuMonitor(cell.device) if cell.device.startswith("cuda") else None
        result = measure_runner(runner, inputs, cell.settings, cell.workload,
                                cell.batch_size, progress, gpu, cell.serving.instances)
    finally:
        runner.close()
    if threads_note:
        result.runtime["threads_note"] = threads_note
    result.model = _model_record(cell, context, check)
    return result


def _model_record(cell, context, check) -> dict:
    signature = context.signature
    inputs = {} if signature is None else {
        t.name: {"shape": list(t.full_shape(cell.batch_size)), **t.describe()}
        for t in signature.inputs}
    return {"label": cell.model_label, **context.model_info, "check": check, "inputs": inputs,
            "inputs_source": getattr(cell.model, "data", None) or "generated"}


class CellStepError(RuntimeError):
    """A step of a cell failed: one clean message (the step, the cause) and what the step had
    recorded (conversions done) so far."""

    def __init__(self, step: str, exc: BaseException, recorded: dict | None = None):
        self.cause = exc
        self.recorded = recorded or {}
        text = str(exc).strip() or type(exc).__name__
        if not isinstance(exc, ValueError):     # our own messages are ValueErrors
            text = f"{type(exc).__name__}: {text}"
        super().__init__(f"{step}: {text}")


OPEN_LOOP = ("server", "ramp", "capacity")


def _threads_for(cell):
    """In-process open-loop cells leave the load generator a core: unless the spec sets the
    threads, the runtime gets one intra-op thread fewer than the cores this process may use."""
    if cell.threads is not None or cell.workload.scenario not in OPEN_LOOP \
            or not cell.device == "cpu":
        return cell.threads, None
    from ..serving.affinity import available
    from ..spec import Threads
    cores = len(available())
    if cores < 2:
        return None, None
    return Threads(intra=cores - 1), (f"intra-op threads {cores - 1} of {cores} cores: one "
                                      f"is left to the open-loop generator")
