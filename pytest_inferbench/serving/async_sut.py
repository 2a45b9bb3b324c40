"""The open-loop system under test over tritonclient's asyncio clients: queries handed over by
the open loop's issuer run on one event loop thread, each stamped when its request is
written to the transport (the send lag the validity rule judges)."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time

import numpy as np


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


def with_write_time(complete):
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

    def __init__(self, endpoint, arrays: dict[str, np.ndarray], window=None):
        # endpoint: a client.Endpoint; window: a statistics.StatisticsWindow
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
                self._hooked, self._report = self.client, with_write_time(complete)
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
