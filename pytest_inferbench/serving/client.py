"""KServe v2 clients (tritonclient) for launched servers and external endpoints: a blocking
call for closed-loop scenarios, an asyncio open-loop system-under-test, the model's signature
from its metadata, and Triton's own statistics for the latency breakdown."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from ..models.signature import InputSignature
from .inputs import signature_from_metadata


def _modules(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as sync
        import tritonclient.grpc.aio as aio
    else:
        import tritonclient.http as sync
        import tritonclient.http.aio as aio
    return sync, aio


class Endpoint:
    def __init__(self, url: str, model: str, protocol: str = "http", system: str = "endpoint",
                 headers: dict | None = None, timeout: float = 2.0):
        self.url, self.model, self.protocol, self.system = url, model, protocol, system
        self.headers = headers or {}
        self.timeout = timeout
        self.sync, self.aio = _modules(protocol)
        self._local = threading.local()

    # -- plumbing
    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self.sync.InferenceServerClient(self.url)
            else:
                client = self.sync.InferenceServerClient(self.url, connection_timeout=self.timeout,
                                                         network_timeout=self.timeout)
            self._local.client = client
        return client

    def _inputs(self, module, arrays: dict[str, np.ndarray]):
        from tritonclient.utils import np_to_triton_dtype
        out = []
        for name, arr in arrays.items():
            i = module.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            i.set_data_from_numpy(np.ascontiguousarray(arr))
            out.append(i)
        return out

    def ready(self) -> bool:
        try:
            c = self._client()
            return bool(c.is_server_ready() and c.is_model_ready(self.model))
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def problem(self) -> str | None:
        """None when the model is ready; else what is wrong, in the server's own words."""
        try:
            c = self._client()
            if not c.is_server_live():
                return f"server at {self.url} is not live"
        except Exception as exc:  # noqa: BLE001 - refused, DNS, TLS...
            return f"cannot reach a KServe v2 server at {self.url} over {self.protocol}: " \
                   f"{_server_message(exc)}"
        try:
            c.get_model_metadata(self.model)
        except Exception as exc:  # noqa: BLE001 - unknown model and the like
            return f"server at {self.url}: {_server_message(exc)}"
        if not c.is_model_ready(self.model):
            return f"server at {self.url}: model '{self.model}' is not ready"
        return None

    def inputs_metadata(self) -> list[dict]:
        meta = self._client().get_model_metadata(self.model)
        if isinstance(meta, dict):
            return meta["inputs"]
        return [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)}
                for i in meta.inputs]

    def signature(self) -> InputSignature:
        """Per-sample signature of a model with a dynamic batch axis (launched servers)."""
        return signature_from_metadata(self.inputs_metadata(), None, 1)

    def infer(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        kw = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        res = self._client().infer(self.model, self._inputs(self.sync, arrays), **kw)
        raw = res.get_response()
        outputs = raw["outputs"] if isinstance(raw, dict) else [{"name": o.name}
                                                               for o in raw.outputs]
        return [np.asarray(res.as_numpy(o["name"]), dtype=np.float32) for o in outputs]

    def blocking_fn(self, arrays: dict[str, np.ndarray]):
        """A zero-argument call per query (one client per thread, inputs prepared once)."""
        kw = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        local = threading.local()

        def call():
            prepared = getattr(local, "prepared", None)
            if prepared is None:
                prepared = local.prepared = (self._client(), self._inputs(self.sync, arrays))
            return prepared[0].infer(self.model, prepared[1], **kw)
        return call

    def statistics(self) -> dict | None:
        """Triton's cumulative inference statistics for the model, or None elsewhere."""
        if self.system not in ("triton", "endpoint"):
            return None
        try:
            stats = self._client().get_inference_statistics(self.model, headers=self.headers)
        except Exception:  # noqa: BLE001 - an endpoint may not expose statistics
            return None
        keys = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
        if self.protocol == "grpc":        # a protobuf message
            model = stats.model_stats[0]
            inf = model.inference_stats
            out = {k: (int(getattr(inf, k).count), int(getattr(inf, k).ns)) for k in keys}
            return out | {"execution_count": int(model.execution_count),
                          "inference_count": int(model.inference_count)}
        model = stats["model_stats"][0]
        inf = model["inference_stats"]
        out = {k: (int(inf.get(k, {}).get("count", 0)), int(inf.get(k, {}).get("ns", 0)))
               for k in keys}
        return out | {"execution_count": int(model.get("execution_count", 0)),
                      "inference_count": int(model.get("inference_count", 0))}

    def async_sut(self, arrays: dict[str, np.ndarray]) -> "AsyncClientSUT":
        return AsyncClientSUT(self, arrays)


def _server_message(exc: BaseException) -> str:
    """tritonclient's InferenceServerException carries the server's message in .message()."""
    message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    return " ".join(str(message).split()) or type(exc).__name__


def breakdown(before: dict | None, after: dict | None, client_mean_ms: float | None) -> dict | None:
    """perf_analyzer-style split of the client's mean latency: queue, compute, the rest."""
    if not before or not after:
        return None
    n = after["success"][0] - before["success"][0]
    if n <= 0:
        return None

    def per(key):
        return (after[key][1] - before[key][1]) / n / 1e6
    queue = per("queue")
    compute = per("compute_input") + per("compute_infer") + per("compute_output")
    server = per("success")
    execs = after["execution_count"] - before["execution_count"]
    out = {"requests": n, "queue_ms": queue, "compute_input_ms": per("compute_input"),
           "compute_infer_ms": per("compute_infer"), "compute_output_ms": per("compute_output"),
           "compute_ms": compute, "server_ms": server,
           "avg_batch": (after["inference_count"] - before["inference_count"]) / execs
           if execs else None}
    if client_mean_ms is not None:
        out["client_mean_ms"] = client_mean_ms
        out["other_ms"] = client_mean_ms - queue - compute   # client, network, (de)serialisation
    return out


_WARM_CONNECTIONS = 8


class AsyncClientSUT:
    """Open-loop system under test over tritonclient's asyncio client, on its own event loop
    thread: issue(i) returns at once, each request has the endpoint's timeout."""

    def __init__(self, endpoint: Endpoint, arrays: dict[str, np.ndarray]):
        self.endpoint = endpoint
        self.arrays = arrays

    def start(self, complete):
        ep = self.endpoint
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def setup():
            if ep.protocol == "grpc":
                self.client = ep.aio.InferenceServerClient(ep.url)
            else:
                self.client = ep.aio.InferenceServerClient(ep.url, conn_limit=1000,
                                                           conn_timeout=ep.timeout)
            self.inputs = ep._inputs(ep.aio, self.arrays)
            # open connections and warm the client's code paths before the first scheduled
            # send: a cold client's first requests stall its thread (and the issuer) for ms
            for _ in range(2):
                await asyncio.gather(*(self.client.infer(ep.model, self.inputs)
                                       for _ in range(_WARM_CONNECTIONS)),
                                     return_exceptions=True)

        async def one(i):
            try:
                await asyncio.wait_for(self.client.infer(ep.model, self.inputs), ep.timeout)
            except Exception as exc:  # noqa: BLE001 - errors and timeouts are counted per query
                complete(i, exc)
            else:
                complete(i)

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(setup())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="inferbench-client", daemon=True)
        self.thread.start()
        ready.wait(30)
        loop = self.loop
        spawn = lambda i: loop.create_task(one(i))   # noqa: E731
        return lambda i: loop.call_soon_threadsafe(spawn, i)

    def stop(self):
        async def close():
            await self.client.close()
        try:
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=5)
        except Exception:  # noqa: BLE001
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
