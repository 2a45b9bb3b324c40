"""A cell behind a server: the system under test is a launched server (Triton, the FastAPI
KServe server; pooled across consecutive cells) or an endpoint someone else runs. Its outputs
are checked against the source model once, then the driver measures it through the client,
and the server's own statistics split the latency (queue, compute) over the measured window.
"""

from __future__ import annotations

import ipaddress
import socket

import numpy as np

from ..core.errors import RuntimeUnavailable
from ..core.result import Result
from ..core.signature import NAMED_VALUES, InputSignature
from ..models.check import OutputMismatch, compare, reference_outputs, tolerance_for
from ..runtimes.base import LoadContext, require
from ..serving import inputs as endpoint_inputs
from ..serving.affinity import pinned
from ..serving.client import Endpoint, resolve_headers, server_message
from ..serving.pool import ServerPool
from ..serving.statistics import StatisticsWindow, breakdown, server_description
from ..workload.engine import measure_callable, warm_up
from ..workload.samples import Progress


def require_serving(cell) -> None:
    """Raise RuntimeUnavailable (-> skip, saying what to install) when this machine lacks what
    the cell's serving system needs, or the server could not take its batch."""
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
    serving = cell.serving
    require_serving(cell)
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
        want = reference_outputs(cell.model, ref_in, context, cell.runtime)
        check = compare(endpoint.infer(check_in), want, tolerance_for(cell))
        check["reference"] = "source model fp32 cpu, through the server"
        if not check["ok"]:
            raise OutputMismatch(f"server outputs disagree with the source model: max relative "
                                 f"error {check.get('max_rel_err')} > {check['tolerance']}",
                                 check)
    return inputs, check


def local_port(url: str) -> set[int] | None:
    """The endpoint's port when it is on this host (the monitor then counts exactly the
    process listening there, and its tree, as the system under test), else None."""
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
    inputs, check = served_inputs(cell, cache, endpoint)
    fn = endpoint.blocking_fn(inputs)
    warm_errors, overhead = _warm(fn, endpoint, inputs, cell.settings.warmup)
    fn.connect(getattr(cell.workload, "concurrency", None) or 1)  # each client its own
    settings = cell.settings.model_copy(update={"warmup": 0})
    # the server's counters bracket the measured queries only: an open-loop client opens the
    # window after its own warm-up requests (and closes it at stop; a search's steps add up),
    # a closed-loop cell here, after the warm-up above
    window = StatisticsWindow(endpoint)
    kind = cell.workload.scenario_def
    if kind.closed_loop:
        window.open()
    result = measure_callable(fn, settings, cell.workload, cell.batch_size, progress,
                              make_sut=lambda: endpoint.async_sut(inputs, window),
                              server_ports=local_port(endpoint.url))
    if kind.closed_loop:
        window.close()
    fn.close()
    result.serving = _serving_figures(cell, endpoint, window, result, overhead, warm_errors)
    result.model = {"label": cell.model_label, "check": check,
                    "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                               for k, v in inputs.items()},
                    "inputs_source": cell.serving.data or "generated"}
    if not endpoint.inputs_metadata():
        result.model["inputs_declared"] = "serving.inputs: the endpoint's metadata lists none"
    result.runtime = {"name": cell.runtime if cell.model is not None else None,
                      "served_by": cell.serving.label()}
    return result


def _warm(fn, endpoint, inputs, warmup) -> tuple[list, dict]:
    """The warm-up (the engine's, with failures kept: a failed query before the window is
    not the cell's end, the window counts) and, outside the window, what one query costs
    the client besides the server. Returns (warm-up errors, overhead)."""
    warm_errors = []

    def warm():
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - its own errors
            warm_errors.append(exc)
    warm()
    try:
        overhead = endpoint.overhead(inputs)
    except Exception as exc:  # noqa: BLE001 - a failed query here is the window's business
        overhead = {"error": server_message(exc)}
    warm_up(warm, warmup)
    return warm_errors, overhead


def _split(cell, window, result):
    """The server's latency breakdown over the window, or (None, why not)."""
    if cell.workload.scenario_def.rate_search:     # the client's figures are one step's
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
    return split, note


def _serving_figures(cell, endpoint, window, result, overhead, warm_errors) -> dict:
    serving = cell.serving
    split, note = _split(cell, window, result)
    fmt, why = endpoint.format()
    out = {"system": serving.system, "protocol": serving.protocol, "url": endpoint.url,
           "tensor_format": fmt, "tensor_format_reason": why, "breakdown": split,
           "overhead": overhead}
    if split is None:
        out["breakdown_note"] = note
    if cell.workload.scenario_def.open_loop:
        out["open_loop_client"] = endpoint.open_loop_client()
    else:
        out["closed_loop_client"] = endpoint.closed_loop_client()
    if endpoint.headers:
        out["headers"] = sorted(endpoint.headers)    # names only, never values
    if warm_errors:
        out["warmup_errors"] = {"count": len(warm_errors),
                                "first": server_message(warm_errors[0])}
    return out
