"""KServe v2 clients (tritonclient) for launched servers and external endpoints: a blocking
call for closed-loop scenarios, an asyncio open-loop system-under-test, the model's signature
from its metadata, the tensor format the server takes (JSON, or Triton's binary extension),
what one query costs the client outside the server, and Triton's own statistics over the
measured windows only, for the latency breakdown."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time

import numpy as np

from ..models.signature import InputSignature
from .inputs import signature_from_metadata

TENSOR_FORMATS = ("auto", "json", "binary")


class StatisticsUnavailable(RuntimeError):
    """The server's statistics cannot be read; the message says why, for the result."""


def resolve_headers(headers: dict | None) -> dict:
    """The spec's headers with each `${VAR}` read from the environment now; a variable that
    is not set is an error naming it (and the header, never a value)."""
    import os
    import re
    out = {}
    for name, value in (headers or {}).items():
        def env(match, name=name):
            var = match.group(1)
            if var not in os.environ:
                raise ValueError(f"serving.headers.{name}: environment variable {var} is not "
                                 f"set")
            return os.environ[var]
        out[name] = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", env, str(value))
    return out


def _modules(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as sync
        import tritonclient.grpc.aio as aio
    else:
        import tritonclient.http as sync
        import tritonclient.http.aio as aio
    return sync, aio


class Endpoint:
    """headers: sent with every request (inference, metadata, health, statistics).
    tensor_format: auto (binary where the server's metadata lists Triton's
    `binary_tensor_data` extension, else JSON), json or binary; HTTP only (gRPC carries raw
    bytes)."""

    def __init__(self, url: str, model: str, protocol: str = "http", system: str = "endpoint",
                 headers: dict | None = None, timeout: float = 2.0, tensor_format: str = "auto"):
        self.url, self.model, self.protocol, self.system = url, model, protocol, system
        self.headers = dict(headers or {})
        if protocol == "grpc":          # gRPC metadata keys are lower case
            self.headers = {k.lower(): v for k, v in self.headers.items()}
        self.timeout = timeout
        self.tensor_format = tensor_format
        self.sync, self.aio = _modules(protocol)
        self._local = threading.local()
        self._format = None         # (format used, why), resolved once
        self._meta = None

    # -- plumbing
    @property
    def _h(self):
        return dict(self.headers) or None

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

    def format(self) -> tuple[str, str]:
        """(the tensor format requests use: binary, json or grpc; why)."""
        if self._format is None:
            self._format = self._resolve_format()
        return self._format

    def _resolve_format(self) -> tuple[str, str]:
        if self.protocol == "grpc":
            return "grpc", "gRPC carries tensors as raw bytes"
        if self.tensor_format != "auto":
            return self.tensor_format, "serving.tensor_format"
        try:
            meta = self._client().get_server_metadata(headers=self._h)
        except Exception as exc:  # noqa: BLE001 - JSON is what every KServe v2 server takes
            return "json", f"the server metadata could not be read ({server_message(exc)})"
        if "binary_tensor_data" in list(meta.get("extensions") or []):
            return "binary", "the server metadata lists the binary_tensor_data extension"
        return "json", "the server metadata does not list the binary_tensor_data extension"

    def _binary(self) -> bool:
        return self.format()[0] == "binary"

    def _inputs(self, module, arrays: dict[str, np.ndarray]):
        from tritonclient.utils import np_to_triton_dtype
        kw = {} if self.protocol == "grpc" else {"binary_data": self._binary()}
        out = []
        for name, arr in arrays.items():
            i = module.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            i.set_data_from_numpy(np.ascontiguousarray(arr), **kw)
            out.append(i)
        return out

    def _outputs(self, module):
        """JSON: every output the metadata lists, asked for as JSON. Binary (and gRPC): None,
        which tritonclient sends as `binary_data_output: true` (all outputs, binary)."""
        if self.protocol == "grpc" or self._binary():
            return None
        names = [o["name"] for o in self.metadata()["outputs"]]
        return [module.InferRequestedOutput(n, binary_data=False) for n in names] or None

    def _options(self, module, client_timeout: bool = True) -> dict:
        """Keyword arguments of every infer call: the headers and requested outputs. A JSON
        body says so (aiohttp would label it application/octet-stream, which a FastAPI server
        such as MLServer refuses with 422)."""
        headers = dict(self.headers)
        if self.protocol == "http" and not self._binary():
            headers.setdefault("Content-Type", "application/json")
        kw = {"headers": headers or None, "outputs": self._outputs(module)}
        if self.protocol == "grpc" and client_timeout:
            kw["client_timeout"] = self.timeout
        return kw

    def ready(self) -> bool:
        try:
            c = self._client()
            return bool(c.is_server_ready(headers=self._h)
                        and c.is_model_ready(self.model, headers=self._h))
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def problem(self) -> str | None:
        """None when the model is ready; else what is wrong, in the server's own words."""
        try:
            c = self._client()
            if not c.is_server_live(headers=self._h):
                return f"server at {self.url} is not live"
        except Exception as exc:  # noqa: BLE001 - refused, DNS, TLS...
            return f"cannot reach a KServe v2 server at {self.url} over {self.protocol}: " \
                   f"{server_message(exc)}"
        try:
            c.get_model_metadata(self.model, headers=self._h)
        except Exception as exc:  # noqa: BLE001 - unknown model and the like
            return f"server at {self.url}: {server_message(exc)}"
        if not c.is_model_ready(self.model, headers=self._h):
            return f"server at {self.url}: model '{self.model}' is not ready"
        return None

    def metadata(self) -> dict:
        """The model's metadata: {"inputs": [...], "outputs": [...]} (name, datatype, shape)."""
        if self._meta is None:
            meta = self._client().get_model_metadata(self.model, headers=self._h)
            if isinstance(meta, dict):
                self._meta = {k: list(meta.get(k) or []) for k in ("inputs", "outputs")}
            else:                               # a protobuf message
                self._meta = {k: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                                  for t in getattr(meta, k)] for k in ("inputs", "outputs")}
        return self._meta

    def inputs_metadata(self) -> list[dict]:
        return self.metadata()["inputs"]

    def signature(self) -> InputSignature:
        """Per-sample signature of a model with a dynamic batch axis (launched servers)."""
        return signature_from_metadata(self.inputs_metadata(), None, 1)

    def infer(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        res = self._client().infer(self.model, self._inputs(self.sync, arrays),
                                   **self._options(self.sync))
        raw = res.get_response()
        outputs = raw["outputs"] if isinstance(raw, dict) else [{"name": o.name}
                                                               for o in raw.outputs]
        return [np.asarray(res.as_numpy(o["name"]), dtype=np.float32) for o in outputs]

    def blocking_fn(self, arrays: dict[str, np.ndarray]):
        """A zero-argument call per query (one client per thread, inputs prepared once)."""
        kw = self._options(self.sync)
        local = threading.local()

        def call():
            prepared = getattr(local, "prepared", None)
            if prepared is None:
                prepared = local.prepared = (self._client(), self._inputs(self.sync, arrays))
            return prepared[0].infer(self.model, prepared[1], **kw)
        return call

    def statistics(self) -> dict:
        """Triton's cumulative inference statistics for the model; raises
        StatisticsUnavailable, saying why, where they cannot be read."""
        if self.system not in ("triton", "endpoint"):
            raise StatisticsUnavailable("the server has no statistics API")
        try:
            stats = self._client().get_inference_statistics(self.model, headers=self._h)
        except Exception as exc:  # noqa: BLE001 - refused, absent, ...
            raise StatisticsUnavailable(self._refusal(exc)) from None
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

    def _refusal(self, exc: BaseException) -> str:
        message = server_message(exc)
        low = message.lower()
        status = str(exc.status() if callable(getattr(exc, "status", None)) else "")
        if "restricted" in low or "access-token" in low or "access token" in low \
                or status in ("401", "403", "StatusCode.PERMISSION_DENIED",
                              "StatusCode.UNAUTHENTICATED"):
            if self.headers:
                return (f"server statistics refused with the headers given "
                        f"({', '.join(sorted(self.headers))}): {message}")
            return f"server statistics need the access token: give `headers` ({message})"
        if status in ("404", "405", "StatusCode.UNIMPLEMENTED") or "not found" in low \
                or "unimplemented" in low:
            return f"the server has no statistics API ({message})"
        return f"the statistics call failed: {message}"

    def model_config(self) -> dict | None:
        """The model's instances and batching from the server's model configuration API
        (Triton's); None where the server has none or refuses it."""
        try:
            if self.protocol == "grpc":
                cfg = self._client().get_model_config(self.model, headers=self._h,
                                                      as_json=True)["config"]
            else:
                cfg = self._client().get_model_config(self.model, headers=self._h)
        except Exception:  # noqa: BLE001 - not Triton, or restricted
            return None
        groups = cfg.get("instance_group") or []
        batcher = cfg.get("dynamic_batching")
        return {"instances": sum(int(g.get("count", 1)) for g in groups) or None,
                "instance_kind": ",".join(sorted({str(g.get("kind", "")) for g in groups}))
                or None,
                "max_batch_size": int(cfg.get("max_batch_size", 0)),
                "dynamic_batching": batcher is not None,
                "max_queue_delay_us": int((batcher or {}).get("max_queue_delay_microseconds",
                                                              0) or 0) if batcher is not None
                else None,
                "backend": cfg.get("backend") or cfg.get("platform") or None}

    def overhead(self, arrays: dict[str, np.ndarray], budget_s: float = 0.3) -> dict:
        """What one query costs the client besides the server, measured here, outside the
        measured window: the bytes of a request and its response and tritonclient's own
        encoding of the request and decoding of the response (the same calls the measured
        client makes), each timed over repeats of one query."""
        fmt, why = self.format()
        out = {"tensor_format": fmt, "tensor_format_reason": why,
               "input_tensor_bytes": int(sum(a.nbytes for a in arrays.values()))}
        if self.protocol == "grpc":
            res = self._client().infer(self.model, self._inputs(self.sync, arrays),
                                       **self._options(self.sync))
            names = [o.name for o in res.get_response().outputs]
            out["output_tensor_bytes"] = int(sum(res.as_numpy(n).nbytes for n in names))
            out["encode_ms"] = _per_call_ms(lambda: self._inputs(self.sync, arrays), budget_s)
            out["decode_ms"] = _per_call_ms(lambda: [res.as_numpy(n) for n in names], budget_s)
            out["measured"] = ("tensor bytes; tritonclient's InferInput building (encode) and "
                               "as_numpy of the outputs (decode)")
            out["not_measured"] = "protobuf serialisation inside gRPC and HTTP/2 framing"
            return out
        sync = self.sync

        def encode():
            return sync.InferenceServerClient.generate_request_body(
                self._inputs(sync, arrays), outputs=self._outputs(sync))
        body, json_size = encode()
        out["request_bytes"] = len(body)
        out["request_json_bytes"] = json_size if json_size is not None else len(body)
        out["encode_ms"] = _per_call_ms(encode, budget_s)
        try:
            reply, header_length = self._post(body, json_size)
        except Exception as exc:  # noqa: BLE001 - the sizes of the request still stand
            out["response_error"] = server_message(exc)
            return out
        out["response_bytes"] = len(reply)
        out["response_json_bytes"] = header_length if header_length is not None else len(reply)
        result = sync.InferResult.from_response_body(reply, header_length=header_length)
        names = [o["name"] for o in result.get_response()["outputs"]]
        out["output_tensor_bytes"] = int(sum(result.as_numpy(n).nbytes for n in names))

        def decode():
            r = sync.InferResult.from_response_body(reply, header_length=header_length)
            return [r.as_numpy(n) for n in names]
        out["decode_ms"] = _per_call_ms(decode, budget_s)
        out["measured"] = ("HTTP body bytes of one request and its response; tritonclient's "
                           "generate_request_body (encode) and InferResult parsing with "
                           "as_numpy (decode), per query")
        out["not_measured"] = "HTTP headers and the connection's own costs; the server's side"
        return out

    def _post(self, body: bytes, json_size: int | None) -> tuple[bytes, int | None]:
        """One raw inference POST (outside any window): the response body and its JSON
        header's length (None when the whole body is JSON)."""
        import http.client
        from urllib.parse import quote
        host, _, port = self.url.rpartition(":")
        headers = {"Content-Type": "application/json", **self.headers}
        if json_size is not None:
            headers["Content-Type"] = "application/octet-stream"
            headers["Inference-Header-Content-Length"] = str(json_size)
        conn = http.client.HTTPConnection(host, int(port), timeout=max(self.timeout, 5.0))
        try:
            conn.request("POST", f"/v2/models/{quote(self.model)}/infer", body, headers)
            resp = conn.getresponse()
            reply = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {reply[:200]!r}")
            length = resp.getheader("Inference-Header-Content-Length")
            return reply, int(length) if length is not None else None
        finally:
            conn.close()

    def async_sut(self, arrays: dict[str, np.ndarray],
                  window: "StatisticsWindow | None" = None) -> "AsyncClientSUT":
        return AsyncClientSUT(self, arrays, window)


def _per_call_ms(fn, budget_s: float, max_calls: int = 200) -> float:
    """Mean ms per call of fn, over at least 3 calls, up to budget_s or max_calls."""
    fn()
    clock = time.perf_counter
    n, t0 = 0, clock()
    while n < 3 or (n < max_calls and clock() - t0 < budget_s):
        fn()
        n += 1
    return round((clock() - t0) / n * 1e3, 4)


def server_message(exc: BaseException) -> str:
    """tritonclient's InferenceServerException carries the server's message in .message()."""
    message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    return " ".join(str(message).split()) or type(exc).__name__


_server_message = server_message       # the name this module's code used before


class StatisticsWindow:
    """Triton's statistics over the measured windows only: open() once the warm-up is over,
    close() once the window's last answer is in; the counts of several windows add up (the
    steps of a search). `note` says why there are none."""

    SETTLE_S = 0.02

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.delta: dict | None = None
        self.windows = 0
        self.note: str | None = None
        self._before = None

    def _read(self) -> dict:
        # Triton counts a request when it releases it, a moment after its answer is sent:
        # read again until two reads agree (a few at most)
        prev = self.endpoint.statistics()
        for _ in range(5):
            time.sleep(self.SETTLE_S)
            cur = self.endpoint.statistics()
            if cur == prev:
                break
            prev = cur
        return prev

    def open(self) -> None:
        if self.note is not None:
            return
        try:
            self._before = self._read()
        except StatisticsUnavailable as exc:
            self.note = str(exc)

    def close(self) -> None:
        before, self._before = self._before, None
        if before is None:
            return
        try:
            after = self._read()
        except StatisticsUnavailable as exc:
            self.note = f"after the window: {exc}"
            return
        delta = {k: (tuple(a - b for a, b in zip(after[k], v)) if isinstance(v, tuple)
                     else after[k] - v) for k, v in before.items()}
        if self.delta is not None:
            delta = {k: (tuple(a + b for a, b in zip(self.delta[k], v)) if isinstance(v, tuple)
                         else self.delta[k] + v) for k, v in delta.items()}
        self.delta = delta
        self.windows += 1


def breakdown(delta: dict | None, client_mean_ms: float | None, measured: int | None = None,
              attempted: int | None = None) -> dict | None:
    """perf_analyzer-style split of the client's mean latency: queue, compute, the rest, from
    the server's counts over the measured windows (delta); with the number of requests the
    server saw next to the number the client measured (answered) and attempted."""
    if not delta:
        return None
    n = delta["success"][0]
    if n <= 0:
        return None

    def per(key):
        return delta[key][1] / n / 1e6
    queue = per("queue")
    compute = per("compute_input") + per("compute_infer") + per("compute_output")
    execs = delta["execution_count"]
    out = {"requests": n, "server_failed": delta["fail"][0], "queue_ms": queue,
           "compute_input_ms": per("compute_input"), "compute_infer_ms": per("compute_infer"),
           "compute_output_ms": per("compute_output"), "compute_ms": compute,
           "server_ms": per("success"), "executions": execs,
           "avg_batch": delta["inference_count"] / execs if execs else None}
    if measured is not None:
        out["client_measured"] = measured
        out["client_attempted"] = attempted if attempted is not None else measured
        out["requests_match"] = n == measured
        if n != measured:
            out["note"] = (f"the server counted {n} successful requests in the window, the "
                           f"client measured {measured}: the server's times are averages over "
                           f"its own count")
    if client_mean_ms is not None:
        out["client_mean_ms"] = client_mean_ms
        out["other_ms"] = client_mean_ms - queue - compute   # client, network, (de)serialisation
    return out


def server_description(cell, endpoint, launched, breakdown) -> dict:
    """result.serving["server"]: how the server runs the model, as far as can be known: the
    model configuration Triton reports (instances, batching), the runtime threads of the
    plugin's own servers, and the average batch Triton's statistics saw in the window. Read
    after the window."""
    serving = cell.serving
    info = {}
    config = endpoint.model_config() if serving.system in ("triton", "endpoint") else None
    if config:
        info.update(config, source="the server's model configuration API")
    elif serving.system == "endpoint":
        info["source"] = "the server has no model configuration API: instances not known"
    if serving.system == "http":
        from .http_server import CONCURRENCY
        info.update(instances=1, concurrency=CONCURRENCY, source="the plugin's FastAPI server")
    if serving.system in ("triton", "http") and cell.device == "cpu":
        # the runtime's intra-op threads in the server process (serving/model_host.py's rule)
        cpus = (launched.get("cpu_affinity") or {}).get("server")
        if cell.threads is not None:
            info["runtime_threads"] = cell.threads.intra or "runtime default"
        else:
            from .affinity import available
            info["runtime_threads"] = len(cpus) if cpus else len(available())
    if breakdown and breakdown.get("avg_batch") is not None:
        info["avg_batch"] = round(breakdown["avg_batch"], 3)    # Triton: samples / executions
    return info


class _WithOptions:
    """A client whose infer calls carry the endpoint's per-request options (headers, the
    requested outputs in its tensor format): call sites stay `client.infer(model, inputs)`."""

    def __init__(self, client, options: dict):
        self._client, self._options = client, options

    def infer(self, model, inputs, **kw):
        return self._client.infer(model, inputs, **{**self._options, **kw})

    def __getattr__(self, name):
        return getattr(self._client, name)


_WARM_CONNECTIONS = 8

# When each open-loop query is written (workload/open_loop.py: complete(i, sent_ns=)): the
# query's task holds a one-item slot that the transport hook below fills, once.
_WRITE_SLOT: contextvars.ContextVar = contextvars.ContextVar("inferbench_write_slot")


def _stamp_write() -> None:
    slot = _WRITE_SLOT.get(None)
    if slot is not None and not slot[0]:
        slot[0] = time.perf_counter_ns()


def _with_write_time(complete):
    """report(i, error, sent_ns): `complete` with the write time where it takes one (the open
    loop's does), else without it (a wrapper that forwards complete(i[, error]) only)."""
    try:
        params = inspect.signature(complete).parameters.values()
        takes = any(p.name == "sent_ns" or p.kind == p.VAR_KEYWORD for p in params)
    except (TypeError, ValueError):
        takes = False
    if takes:
        return lambda i, error, sent_ns: complete(i, error, sent_ns=sent_ns)
    return lambda i, error, sent_ns: complete(i) if error is None else complete(i, error)


def watch_writes(client, protocol: str) -> str:
    """Hook tritonclient's asyncio `client` (or a wrapper that passes attributes through) so
    that a request stamps its task's write slot as it goes to the transport. Returns where:
    "socket write" (HTTP: aiohttp's first body chunk, stamped right before the headers and
    it are handed to the socket), "grpc call start" (the request serialised, right before
    gRPC's core call that writes it), or "coroutine start" when neither hook fits."""
    try:
        if protocol == "grpc":
            from tritonclient.grpc import service_pb2
            serialize = service_pb2.ModelInferRequest.SerializeToString

            def stamped(request):
                data = serialize(request)
                _stamp_write()
                return data
            try:
                call = client._channel.unary_unary(
                    "/inference.GRPCInferenceService/ModelInfer", request_serializer=stamped,
                    response_deserializer=service_pb2.ModelInferResponse.FromString,
                    _registered_method=True)
            except TypeError:        # grpc before _registered_method
                call = client._channel.unary_unary(
                    "/inference.GRPCInferenceService/ModelInfer", request_serializer=stamped,
                    response_deserializer=service_pb2.ModelInferResponse.FromString)
            client._client_stub.ModelInfer = call
            return "grpc call start"
        import aiohttp

        async def chunk_sent(session, ctx, params):
            _stamp_write()
        trace = aiohttp.TraceConfig()
        trace.on_request_chunk_sent.append(chunk_sent)
        trace.freeze()
        client._stub.trace_configs.append(trace)
        return "socket write"
    except (AttributeError, ImportError):
        return "coroutine start"


class AsyncClientSUT:
    """Open-loop system under test over tritonclient's asyncio client, on its own event loop
    thread: issue(i) returns at once, each request has the endpoint's timeout. A statistics
    window, when given, opens after the client's warm-up requests and closes at stop."""

    def __init__(self, endpoint: Endpoint, arrays: dict[str, np.ndarray],
                 window: StatisticsWindow | None = None):
        self.endpoint = endpoint
        self.arrays = arrays
        self.window = window

    def start(self, complete):
        ep = self.endpoint
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        options = ep._options(ep.aio, client_timeout=False)   # here: metadata calls block

        async def setup():
            if ep.protocol == "grpc":
                client = ep.aio.InferenceServerClient(ep.url)
            else:
                client = ep.aio.InferenceServerClient(ep.url, conn_limit=1000,
                                                      conn_timeout=ep.timeout)
            self.client = _WithOptions(client, options)
            self.inputs = ep._inputs(ep.aio, self.arrays)
            # open connections and warm the client's code paths before the first scheduled
            # send: a cold client's first requests stall its thread (and the issuer) for ms
            for _ in range(2):
                await asyncio.gather(*(self.client.infer(ep.model, self.inputs)
                                       for _ in range(_WARM_CONNECTIONS)),
                                     return_exceptions=True)

        async def one(i):
            # the write time goes back with the completion: the open loop judges send lag
            # on it (on the loop thread, once per client: where its transport is hooked)
            if getattr(self, "_hooked", None) is not self.client:
                self.write_hook = watch_writes(self.client, ep.protocol)
                self._hooked, self._report = self.client, _with_write_time(complete)
            slot = [0]
            _WRITE_SLOT.set(slot)
            started = time.perf_counter_ns()
            try:
                await asyncio.wait_for(self.client.infer(ep.model, self.inputs), ep.timeout)
            except Exception as exc:  # noqa: BLE001 - errors and timeouts are counted per query
                self._report(i, exc, slot[0] or started)
            else:
                self._report(i, None, slot[0] or started)

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(setup())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="inferbench-client", daemon=True)
        self.thread.start()
        ready.wait(30)
        if self.window is not None:     # the server's counts from here: warm-up left out
            self.window.open()
        loop = self.loop
        spawn = lambda i: loop.create_task(one(i))   # noqa: E731
        return lambda i: loop.call_soon_threadsafe(spawn, i)

    def stop(self):
        if self.window is not None:
            self.window.close()

        async def close():
            await self.client.close()
        try:
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=5)
        except Exception:  # noqa: BLE001
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
