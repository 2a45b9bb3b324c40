"""KServe v2 clients for launched servers and external endpoints: the closed loop's
blocking call and the open loop's system under test (the lean HTTP or gRPC clients, or
tritonclient's where they cannot run), the model's signature from its metadata, the tensor
format the server takes (JSON, or Triton's binary extension), what one query costs the
client outside the server, and Triton's own statistics over the measured windows only, for
the latency breakdown."""

from __future__ import annotations

import importlib.util
import threading
import time

import numpy as np

from ..core.signature import InputSignature
from .async_sut import AsyncClientSUT
from .inputs import signature_from_metadata
from .lean_grpc import METHOD as GRPC_METHOD
from .lean_grpc import BlockingGrpcCall, LeanGrpcSUT
from .lean_grpc import build_request as build_grpc_request
from .lean_h2 import BlockingH2Call
from .lean_h2_open import LeanH2SUT
from .lean_http import BlockingHttpCall, LeanHttpSUT, build_request
from .statistics import StatisticsUnavailable, StatisticsWindow


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
        """A zero-argument call per query for the closed loop: the lean client of the
        protocol (one connection or channel per client thread) with the request built here,
        once; without httptools (HTTP), one tritonclient client per thread."""
        client = self.closed_loop_client()
        if client == "lean-grpc":
            return BlockingH2Call(self.url, GRPC_METHOD, self.prepared_request(arrays),
                                  self.timeout, metadata=self._metadata())
        if client == "grpcio":
            return BlockingGrpcCall(self.url, self.prepared_request(arrays), self.timeout,
                                    metadata=self._metadata())
        if client == "lean-http":
            return BlockingHttpCall(self.url, self.prepared_request(arrays), self.timeout)
        return _TritonclientCall(self, arrays)

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

    def _lean(self) -> bool:
        return importlib.util.find_spec("httptools" if self.protocol == "http" else "grpc") \
            is not None

    def open_loop_client(self) -> str:
        """Which client sends an open loop's queries (serving/lean_http.py and
        serving/lean_h2_open.py say why; grpcio's call where hpack is missing)."""
        return self._lean_client() or f"tritonclient-aio-{self.protocol}"

    def closed_loop_client(self) -> str:
        """Which client sends a closed loop's queries: the lean one, blocking (gRPC: HTTP/2
        frames of its own, serving/lean_h2.py, or grpcio's call without hpack)."""
        return self._lean_client() or f"tritonclient-{self.protocol}"

    def _lean_client(self) -> str | None:
        if not self._lean():
            return None
        if self.protocol == "grpc" and importlib.util.find_spec("hpack") is None:
            return "grpcio"
        return f"lean-{self.protocol}"

    def prepared_request(self, arrays: dict[str, np.ndarray]) -> bytes:
        """One inference request as the bytes tritonclient's own client would send: the HTTP
        request (headers and body, binary or JSON) or the serialized ModelInferRequest."""
        opts = self._options(self.sync)
        inputs = self._inputs(self.sync, arrays)
        if self.protocol == "grpc":
            return build_grpc_request(self.model, inputs, opts["outputs"])
        body, json_size = self.sync.InferenceServerClient.generate_request_body(
            inputs, outputs=opts["outputs"])
        return build_request(self.url, self.model, body, json_size, opts["headers"])

    def _metadata(self):
        """gRPC metadata of every call: the endpoint's headers."""
        return (self._options(self.sync)["headers"] or {}).items()

    def async_sut(self, arrays: dict[str, np.ndarray],
                  window: StatisticsWindow | None = None):
        """The open loop's system under test: the lean client of the protocol, with the
        request built here, before the window; without httptools (HTTP), tritonclient's
        asyncio client."""
        client = self.open_loop_client()
        if client == "lean-grpc":
            return LeanH2SUT(self.url, GRPC_METHOD, self.prepared_request(arrays),
                             self.timeout, window, metadata=self._metadata())
        if client == "grpcio":
            return LeanGrpcSUT(self.url, self.prepared_request(arrays), self.timeout, window,
                               metadata=self._metadata())
        if client == "lean-http":
            return LeanHttpSUT(self.url, self.prepared_request(arrays), self.timeout, window)
        return AsyncClientSUT(self, arrays, window)


class _TritonclientCall:
    """The closed loop's call without the lean client: tritonclient's blocking client, one
    per thread, its inputs built once per thread."""

    def __init__(self, endpoint: Endpoint, arrays: dict[str, np.ndarray]):
        self.endpoint, self.arrays = endpoint, arrays
        self.kw = endpoint._options(endpoint.sync)
        self._local = threading.local()

    def __call__(self):
        ep, prepared = self.endpoint, getattr(self._local, "prepared", None)
        if prepared is None:
            prepared = self._local.prepared = (ep._client(), ep._inputs(ep.sync, self.arrays))
        return prepared[0].infer(ep.model, prepared[1], **self.kw)

    def connect(self, n: int) -> None:
        """Each thread makes its own client at its first query."""

    def close(self) -> None:
        """Each thread's client closes with its thread."""


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


