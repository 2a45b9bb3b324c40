"""The lean KServe v2 gRPC clients over grpcio, where hpack is missing (serving/lean_h2.py and
serving/lean_h2_open.py write their own HTTP/2 frames otherwise): the ModelInferRequest built
and serialized once before the window, each call started by the issuing thread itself.

Why not tritonclient's asyncio client on the hot path: each query there is a hand-off to an
event loop thread (a wake-up), a task, grpc.aio's call machinery and a protobuf serialization;
on a 2-core host the hand-off alone cost p99 ~0.5 ms between the scheduled time and the call.
Here a query is one call start on a plain (sync) grpc channel, stamped right before it, from
the issuer's own thread: grpc's generic API with no serializers sends the prepared bytes as
they are (grpc/_common.py: a None serializer returns the message unchanged) and leaves the
reply as bytes. gRPC's channel thread runs each call's done callback, which reports the
completion. tritonclient still builds the request (`_get_inference_request`, the builder its
`infer` and `async_infer` call: the same bytes its own client sends) and its channel options;
replies are decoded outside the window (the blocking client checks a sample).

A status other than OK is a failed query carrying the server's message; the endpoint's
timeout is each call's deadline, and DEADLINE_EXCEEDED counts as a timeout. Calls still open
at stop are cancelled with the channel and not reported (the open loop counts them).
"""

from __future__ import annotations

import functools
import threading
import time

from .async_sut import with_write_time

METHOD = "/inference.GRPCInferenceService/ModelInfer"
_WARM_CALLS = 8             # concurrent calls per warm-up round (two rounds)


class ServerError(RuntimeError):
    """An inference call the server answered with a gRPC status other than OK."""


def build_request(model: str, inputs, outputs=None) -> bytes:
    """The serialized ModelInferRequest of one inference: tritonclient's own builder (what
    InferenceServerClient.infer sends for these InferInput / InferRequestedOutput lists)."""
    from tritonclient.grpc._utils import _get_inference_request
    request = _get_inference_request(
        model_name=model, inputs=inputs, model_version="", request_id="", outputs=outputs,
        sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None,
        parameters=None)
    return request.SerializeToString()


def channel_options() -> list[tuple[str, int]]:
    """The channel arguments tritonclient's InferenceServerClient uses by default (message
    sizes up to 2 GiB, its keepalive defaults)."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
    keep = KeepAliveOptions()
    return [("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keep.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keep.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keep.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keep.http2_max_pings_without_data)]


def raw_call(channel):
    """ModelInfer on `channel` with identity serialization: bytes in, bytes out."""
    try:
        return channel.unary_unary(METHOD, request_serializer=None,
                                   response_deserializer=None, _registered_method=True)
    except TypeError:           # grpc before _registered_method
        return channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)


class LeanGrpcSUT:
    """Open-loop system under test (workload/open_loop.py's protocol): issue(i) starts the
    prepared call from the caller's thread; completions come from gRPC's channel thread with
    the call's start time. metadata: (key, value) pairs sent with every call (the endpoint's
    headers). A statistics window, when given, opens after the warm-up calls and closes at
    stop."""

    write_hook = "grpc call start (prepared request, issuer thread)"

    def __init__(self, url: str, request: bytes, timeout: float, window=None,
                 metadata=None):
        self.url, self.request, self.timeout = url, request, timeout
        self.window = window
        self.metadata = tuple(metadata or ()) or None

    def start(self, complete):
        import grpc
        self._report = with_write_time(complete)
        self._ok, self._late = grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED
        self._stopped = False
        self._channel = grpc.insecure_channel(self.url, options=channel_options())
        self._call = raw_call(self._channel)
        self._warm()
        if self.window is not None:     # the server's counts from here: warm-up left out
            self.window.open()
        return self.issue

    def _warm(self) -> None:
        """Connect the channel and send two rounds of concurrent calls, blocking, before the
        window (a cold path's first calls are slow). Their errors stay out of the run, as
        the engine's warm-up's do; a call past its deadline ends the warm-up (a stalled
        server: the run will count it)."""
        for _ in range(2):
            calls = [self._call.future(self.request, timeout=self.timeout,
                                       metadata=self.metadata) for _ in range(_WARM_CALLS)]
            if any(call.code() is self._late for call in calls):
                break

    def issue(self, i: int) -> None:
        """The issuer's thread: stamp, start the call, leave its completion to gRPC."""
        sent = time.perf_counter_ns()
        try:
            call = self._call.future(self.request, timeout=self.timeout,
                                     metadata=self.metadata)
        except Exception as exc:  # noqa: BLE001 - a call that cannot start fails its query
            self._report(i, exc, sent)
            return
        call.add_done_callback(functools.partial(self._done, i, sent))

    def _done(self, i: int, sent: int, call) -> None:
        if self._stopped:
            return
        code = call.code()
        if code is self._ok:
            error = None
        elif code is self._late:
            error = TimeoutError(f"no answer in {self.timeout:g}s")
        else:
            details = " ".join(str(call.details() or "").split())
            error = ServerError(f"gRPC {code.name}: {details}")
        self._report(i, error, sent)

    def stop(self) -> None:
        if self.window is not None:
            self.window.close()
        self._stopped = True
        self._channel.close()           # cancels the calls still open


class BlockingGrpcCall:
    """The closed loop's gRPC client where hpack is missing (serving/lean_h2.py is the lean
    one): a zero-argument call per query that sends the prepared request through grpcio on
    its client thread's own channel and waits for the answer. A status other than OK raises
    ServerError with the server's message; DEADLINE_EXCEEDED raises TimeoutError."""

    def __init__(self, url: str, request: bytes, timeout: float, metadata=None):
        import grpc
        self.url, self.request, self.timeout = url, request, timeout
        self.metadata = tuple(metadata or ()) or None
        self._grpc = grpc
        self._local = threading.local()
        self._channels: list = []

    def __call__(self) -> bytes:
        call = getattr(self._local, "call", None)
        if call is None:
            channel = self._grpc.insecure_channel(self.url, options=channel_options())
            self._channels.append(channel)
            call = self._local.call = raw_call(channel)
        try:
            return call(self.request, timeout=self.timeout, metadata=self.metadata)
        except self._grpc.RpcError as exc:
            code = exc.code()
            if code is self._grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(f"no answer in {self.timeout:g}s") from None
            details = " ".join(str(exc.details() or "").split())
            raise ServerError(f"gRPC {code.name}: {details}") from None

    def connect(self, n: int) -> None:
        """Each thread opens its channel at its first query."""

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
