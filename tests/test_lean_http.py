"""The open loop's lean HTTP client (serving/lean_http.py): the request it builds before the
window is byte for byte what tritonclient's own asyncio client sends for the same tensors
(every dtype, batch sizes, binary and JSON), and a server that answers 500, closes the
connection or stalls is counted query by query while nothing hangs.

The server here is a small HTTP/1.1 server that records what it receives and answers as the
test says: a controlled system under test."""

import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("httptools", reason="httptools not installed: pip install httptools "
                    "(the open loop's lean HTTP client)")
aio = pytest.importorskip("tritonclient.http.aio", reason="tritonclient not installed: "
                          "pip install 'tritonclient[http]'")

from pytest_inferbench.serving.client import Endpoint  # noqa: E402
from pytest_inferbench.serving.lean_http import (BlockingHttpCall, LeanHttpSUT,  # noqa: E402
                                                 ServerError)

REPLY = json.dumps({"model_name": "m", "outputs": [{"name": "y", "datatype": "FP32",
                                                    "shape": [1], "data": [1.0]}]}).encode()


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive, as a real inference server

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        server.seen.append((self.path, dict(self.headers), body))
        server.ports.append(self.client_address[1])
        mode = server.mode(len(server.seen))
        if mode == "close":
            self.close_connection = True
            return
        if mode == "stall":
            time.sleep(1.0)
        status, reply = (500, b'{"error": "injected failure"}') if mode == "500" else \
            (200, REPLY)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self):                   # the server metadata (tensor format: binary)
        reply = json.dumps({"name": "rec", "extensions": ["binary_tensor_data"]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass                            # a stalled answer written to a dropped connection


@pytest.fixture
def recorder():
    server = _Server(("127.0.0.1", 0), _Recorder)
    server.seen, server.ports, server.mode = [], [], (lambda n: "ok")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


ARRAYS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "f16": np.linspace(-2, 2, 6, dtype=np.float16).reshape(3, 2),
    "i64": np.array([[1, -2], [3, 4], [2**40, 0]], dtype=np.int64),
    "i32": np.array([[7], [8], [9]], dtype=np.int32),
    "i8": np.array([[-1, 2], [3, -4], [5, 6]], dtype=np.int8),
    "u8": np.array([[255, 0], [1, 2], [3, 4]], dtype=np.uint8),
    "b": np.array([[True], [False], [True]]),
    "s": np.array([[b"one"], [b"two words"], ["café".encode()]], dtype=np.object_),
}


def _tritonclient_request(url: str, model: str, inputs, outputs, headers):
    """What tritonclient's asyncio client (the path before the lean one) sends."""
    async def send():
        client = aio.InferenceServerClient(url)
        try:
            await client.infer(model, inputs, outputs=outputs, headers=headers)
        finally:
            await client.close()
    asyncio.run(send())


def _lean_request(endpoint, arrays, recorder) -> tuple[dict, bytes]:
    sut = endpoint.async_sut(arrays)
    assert isinstance(sut, LeanHttpSUT)
    done = []
    issue = sut.start(lambda i, error=None, sent_ns=None: done.append((i, error, sent_ns)))
    before = len(recorder.seen)
    try:
        issue(0)
        deadline = time.monotonic() + 5
        while not done and time.monotonic() < deadline:
            time.sleep(0.001)
    finally:
        sut.stop()
    assert done and done[0][0] == 0 and done[0][1] is None and done[0][2] > 0, done
    # kept-alive connections opened and warmed before the window (8, two requests each):
    # the query went out on one of them, nothing was opened for it
    warm = recorder.ports[:before]
    assert len(warm) == 16 and len(set(warm)) == 8 and recorder.ports[before] in warm
    path, headers, body = recorder.seen[before]
    return path, headers, body


@pytest.mark.parametrize("tensor_format", ["binary", "json"])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_prepared_request_is_what_tritonclient_sends(recorder, tensor_format, batch):
    url = f"127.0.0.1:{recorder.server_address[1]}"
    endpoint = Endpoint(url, "my model", "http", headers={"X-Team": "bench"},
                        tensor_format=tensor_format)
    endpoint.metadata = lambda: {"outputs": [{"name": "y"}]}     # no model behind it
    arrays = {k: v[:batch] for k, v in ARRAYS.items()}
    path, lean_headers, lean_body = _lean_request(endpoint, arrays, recorder)
    opts = endpoint._options(endpoint.aio)
    _tritonclient_request(url, "my model", endpoint._inputs(endpoint.aio, arrays),
                          opts["outputs"], opts["headers"])
    ref_path, ref_headers, ref_body = recorder.seen[-1]
    assert path == ref_path == "/v2/models/my%20model/infer"
    assert lean_body == ref_body                    # the tensors, byte for byte
    for name in ("Inference-Header-Content-Length", "Content-Length", "X-Team"):
        assert lean_headers.get(name) == ref_headers.get(name), name
    # a binary body goes unlabelled, as tritonclient's blocking client sends it (the asyncio
    # client's aiohttp labels it application/octet-stream: MLServer answers that with a 500)
    assert lean_headers.get("Content-Type") == \
        ("application/json" if tensor_format == "json" else None)
    if tensor_format == "json":
        sent = json.loads(lean_body)
        assert "Inference-Header-Content-Length" not in lean_headers
        assert {i["name"]: i["shape"] for i in sent["inputs"]} == \
            {k: list(v.shape) for k, v in arrays.items()}
    else:
        assert int(lean_headers["Inference-Header-Content-Length"]) < len(lean_body)


def _pause(sut, pump: bool, seconds: float) -> None:
    """Wait as the open loop's issuer does: reading the answers itself (pump) or sleeping
    while the receiving thread reads them."""
    if pump:
        sut.wait_until(time.perf_counter_ns() + int(seconds * 1e9))
    else:
        time.sleep(seconds)


def _run_queries(recorder, n, pump, timeout=0.3, spacing=0.02):
    url = f"127.0.0.1:{recorder.server_address[1]}"
    endpoint = Endpoint(url, "m", "http", timeout=timeout, tensor_format="json")
    endpoint.metadata = lambda: {"outputs": [{"name": "y"}]}
    sut = endpoint.async_sut({"x": np.ones((1, 4), np.float32)})
    done: dict = {}
    issue = sut.start(lambda i, error=None, sent_ns=None: done.setdefault(i, error),
                      pump=pump)
    warm = len(recorder.seen)
    recorder.mode = lambda k: MODES[(k - warm - 1) % len(MODES)] if k > warm else "ok"
    t0 = time.monotonic()
    for i in range(n):
        issue(i)
        _pause(sut, pump, spacing)
    while len(done) < n and time.monotonic() - t0 < 10:
        _pause(sut, pump, 0.01)
    sut.stop()
    return done, time.monotonic() - t0


MODES = ["ok", "500", "close", "stall", "ok"]


@pytest.mark.parametrize("pump", [False, True], ids=["receiving-thread", "issuer-reads"])
def test_500s_closed_connections_and_stalls_are_counted_and_nothing_hangs(recorder, pump):
    done, took = _run_queries(recorder, 10, pump)
    assert len(done) == 10, sorted(done)            # every query completed, one way or another
    assert took < 5
    kinds = [MODES[i % len(MODES)] for i in range(10)]
    for i, kind in enumerate(kinds):
        err = done[i]
        if kind == "ok":
            assert err is None, (i, err)
        elif kind == "500":
            assert isinstance(err, ServerError) and "HTTP 500: injected failure" in str(err)
        elif kind == "close":
            assert isinstance(err, ConnectionError), (i, err)
        else:
            assert isinstance(err, TimeoutError), (i, err)


# ---------------------------------------------------------------- the closed loop's client

def _tritonclient_sync_request(url: str, model: str, inputs, outputs, headers):
    """What tritonclient's blocking client (the closed loop's path before the lean one)
    sends."""
    import tritonclient.http as sync
    client = sync.InferenceServerClient(url)
    try:
        client.infer(model, inputs, outputs=outputs, headers=headers)
    finally:
        client.close()


@pytest.mark.parametrize("tensor_format", ["binary", "json"])
def test_the_closed_loops_request_is_what_tritonclient_sends(recorder, tensor_format):
    url = f"127.0.0.1:{recorder.server_address[1]}"
    endpoint = Endpoint(url, "my model", "http", headers={"X-Team": "bench"},
                        tensor_format=tensor_format)
    endpoint.metadata = lambda: {"outputs": [{"name": "y"}]}
    arrays = {k: v[:3] for k, v in ARRAYS.items()}
    call = endpoint.blocking_fn(arrays)
    assert isinstance(call, BlockingHttpCall) and endpoint.closed_loop_client() == "lean-http"
    call()
    call.close()
    path, lean_headers, lean_body = recorder.seen[-1]
    opts = endpoint._options(endpoint.sync)
    _tritonclient_sync_request(url, "my model", endpoint._inputs(endpoint.sync, arrays),
                               opts["outputs"], opts["headers"])
    ref_path, ref_headers, ref_body = recorder.seen[-1]
    assert path == ref_path and lean_body == ref_body
    for name in ("Content-Type", "Inference-Header-Content-Length", "Content-Length",
                 "X-Team"):
        assert lean_headers.get(name) == ref_headers.get(name), name


def test_the_closed_loops_client_fails_only_the_query_a_server_spoils(recorder):
    """One thread's calls, the server answering ok, 500, closing, stalling past the timeout,
    ok: each failure raises its own error and drops its connection (as the open loop's
    client does), the call after it goes on over a new one, and an ok answer keeps its
    connection."""
    url = f"127.0.0.1:{recorder.server_address[1]}"
    endpoint = Endpoint(url, "m", "http", timeout=0.3, tensor_format="json")
    endpoint.metadata = lambda: {"outputs": [{"name": "y"}]}
    call = endpoint.blocking_fn({"x": np.ones((1, 4), np.float32)})
    recorder.mode = lambda k: MODES[(k - 1) % len(MODES)]
    outcomes = []
    t0 = time.monotonic()
    for _ in range(2 * len(MODES)):
        try:
            call()
            outcomes.append("ok")
        except ServerError as exc:
            assert str(exc) == "HTTP 500: injected failure"
            outcomes.append("500")
        except TimeoutError:            # before ConnectionError: both are OSErrors
            outcomes.append("stall")
        except ConnectionError:
            outcomes.append("close")
    call.close()
    assert outcomes == MODES * 2
    assert time.monotonic() - t0 < 5
    ports = recorder.ports
    # the 500 came on the first ok's connection; each call after a failure opened a new
    # one, and two ok calls in a row (end of one round, start of the next) shared theirs
    assert ports[0] == ports[1] and ports[2] != ports[1]
    assert ports[3] != ports[2] and ports[4] != ports[3] and ports[5] == ports[4]


def test_each_closed_loop_thread_keeps_its_own_connection(recorder):
    url = f"127.0.0.1:{recorder.server_address[1]}"
    endpoint = Endpoint(url, "m", "http", tensor_format="json")
    endpoint.metadata = lambda: {"outputs": [{"name": "y"}]}
    call = endpoint.blocking_fn({"x": np.ones((1, 4), np.float32)})

    def client():
        for _ in range(5):
            call()
    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    call.close()
    assert len(recorder.seen) == 15 and len(set(recorder.ports)) == 3   # kept alive


class _Closing(_Recorder):
    timeout = 0.3               # the server closes a kept-alive connection idle this long


@pytest.mark.parametrize("pump", [False, True], ids=["receiving-thread", "issuer-reads"])
def test_connections_the_server_closed_while_idle_are_never_written_to(pump):
    """uvicorn closes kept-alive connections idle for 5 s: in a paired cell a side waits
    that long between its sub-slices. The open loop's warm connections, closed by the server
    before the first query, are passed over; every query succeeds on a new one (a write to
    a closed one failed queries with EBADF)."""
    server = _Server(("127.0.0.1", 0), _Closing)
    server.seen, server.ports, server.mode = [], [], (lambda n: "ok")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = Endpoint(f"127.0.0.1:{server.server_address[1]}", "m", "http",
                            tensor_format="json")
        endpoint.metadata = lambda: {"outputs": [{"name": "y"}]}
        sut = endpoint.async_sut({"x": np.ones((1, 4), np.float32)})
        done: dict = {}
        issue = sut.start(lambda i, error=None, sent_ns=None: done.setdefault(i, error),
                          pump=pump)
        _pause(sut, pump, 0.8)          # every warm connection closed by the server
        for i in range(12):
            issue(i)
            _pause(sut, pump, 0.01)
        deadline = time.monotonic() + 5
        while len(done) < 12 and time.monotonic() < deadline:
            _pause(sut, pump, 0.01)
        sut.stop()
        assert done == {i: None for i in range(12)}
    finally:
        server.shutdown()
        server.server_close()


def test_a_connection_the_server_closed_unseen_carries_no_request():
    """The server closed a kept-alive connection while nothing read it (a closed-loop
    thread between its warm-up and its window, or an issuer the host did not run, for longer
    than the server's keep-alive): it is found closed before the next request, which goes
    on a new connection (it failed with 'the server closed the connection': seen against
    MLServer under a starved CI worker)."""
    from pytest_inferbench.serving.lean_pool import IDLE_CHECK_NS
    server = _Server(("127.0.0.1", 0), _Closing)
    server.seen, server.ports, server.mode = [], [], (lambda n: "ok")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    idle = IDLE_CHECK_NS / 1e9 + 0.3
    try:
        endpoint = Endpoint(f"127.0.0.1:{server.server_address[1]}", "m", "http",
                            tensor_format="json")
        endpoint.metadata = lambda: {"outputs": [{"name": "y"}]}
        call = endpoint.blocking_fn({"x": np.ones((1, 4), np.float32)})
        call()
        time.sleep(idle)
        call()                          # raised ConnectionError
        call.close()
        assert len(set(server.ports)) == 2
        sut = endpoint.async_sut({"x": np.ones((1, 4), np.float32)})
        done: dict = {}
        issue = sut.start(lambda i, error=None, sent_ns=None: done.setdefault(i, error),
                          pump=True)
        time.sleep(idle)                # not pumped: the server's closes are unread
        for i in range(3):
            issue(i)
            _pause(sut, True, 0.05)
        sut.stop()
        assert done == {0: None, 1: None, 2: None}
    finally:
        server.shutdown()
        server.server_close()


def test_the_open_loop_reads_answers_on_the_issuers_own_thread(recorder):
    """run_open_loop drives the lean HTTP client with pump=True: no receiving thread, every
    answer read (and its completion reported) on the thread that sends, between sends."""
    from pytest_inferbench.spec import Settings
    from pytest_inferbench.workload import arrivals
    from pytest_inferbench.workload.open_loop import run_open_loop
    endpoint = Endpoint(f"127.0.0.1:{recorder.server_address[1]}", "m", "http",
                        tensor_format="json")
    endpoint.metadata = lambda: {"outputs": [{"name": "y"}]}
    sut = endpoint.async_sut({"x": np.ones((1, 4), np.float32)})
    threads = set()
    start = sut.start

    def watched(complete, **kw):
        def wrapped(i, error=None, sent_ns=None):
            threads.add(threading.current_thread().name)
            complete(i, error, sent_ns=sent_ns)
        return start(wrapped, **kw)
    sut.start = watched
    settings = Settings(warmup=0, min_duration=0.4, max_duration=0.4, min_queries=1,
                        ci_width=1e-12)
    x = run_open_loop(sut, arrivals.schedule("constant", 100, 0.4), settings, 1.0).extra
    assert x["issued"] >= 30 and x["completed"] == x["issued"], x
    assert x["send_time"] == "write" and x["writes_reported"] == x["issued"]
    assert threads == {threading.current_thread().name}, threads
    assert not [t for t in threading.enumerate() if t.name == "inferbench-receiver"]


# a server in a process of its own: stopping the client's process must not stop it too
SERVER = """import http.server
REPLY = b'{"model_name": "m", "outputs": [{"name": "y", "datatype": "FP32", "shape": [1], '
REPLY += b'"data": [1.0]}]}'
class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(REPLY)))
        self.end_headers()
        self.wfile.write(REPLY)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

STOPPER = """import os, signal, sys, time
pid = int(sys.argv[1])
time.sleep(0.1)
for _ in range(3):
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.03)
    os.kill(pid, signal.SIGCONT)
    time.sleep(0.12)
"""


@pytest.fixture
def answering():
    """The port of an HTTP server that answers every POST at once, in its own process."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


def _open_loop_1s(port, slow_every=None, on_start=lambda: None, blocked_at=()):
    """One second at 200/s through the lean client, run_open_loop driving it; slow_every:
    the client spends 7 ms of its own CPU after every n-th write; blocked_at: writes after
    which the issuer's thread blocks 30 ms (not run, as when the GIL is held elsewhere);
    on_start: called once the client is warm, right before the window."""
    from pytest_inferbench.spec import Settings
    from pytest_inferbench.workload import arrivals
    from pytest_inferbench.workload.open_loop import run_open_loop
    endpoint = Endpoint(f"127.0.0.1:{port}", "m", "http", tensor_format="json")
    endpoint.metadata = lambda: {"outputs": [{"name": "y"}]}
    sut = endpoint.async_sut({"x": np.ones((1, 4), np.float32)})
    start = sut.start

    def slow_start(complete, **kw):
        issue = start(complete, **kw)
        on_start()
        if not slow_every and not blocked_at:
            return issue

        def slow(i):
            issue(i)
            if i in blocked_at:
                time.sleep(0.03)
            if not slow_every:
                return
            if i % slow_every == slow_every // 2:
                end = time.perf_counter_ns() + 7_000_000
                while time.perf_counter_ns() < end:
                    pass
        return slow
    sut.start = slow_start
    settings = Settings(warmup=0, min_duration=1.0, max_duration=1.0, min_queries=1,
                        ci_width=1e-12)
    return run_open_loop(sut, arrivals.schedule("constant", 200, 1.0), settings, 1.0).extra


def test_sends_a_stalled_host_made_late_are_told_from_the_clients_own_work(answering):
    """This process is stopped three times for 30 ms (SIGSTOP from another process: a host
    that does not run the issuer; the server runs on): the late sends fall in the stalls
    the issuer saw while it polled, and what a verdict on them would say is to re-run on a
    quieter host. A client whose own work (7 ms of CPU after every 10th write) makes its
    sends late is told so instead. (Neither run need be invalid: the stopped process reads
    its answers late too, and the spin follows the write whose answer it delays.)"""
    from pytest_inferbench.workload.open_loop import _stall_cause
    stopper = []
    try:
        x = _open_loop_1s(answering, on_start=lambda: stopper.append(subprocess.Popen(
            [sys.executable, "-c", STOPPER, str(os.getpid())])))
    finally:
        stopper[0].wait(timeout=10)
    held = x["issuer_stalls"]
    assert held["count"] >= 3 and held["max_ms"] >= 20, held
    assert held["late_sends"] >= 6 and 2 * held["late_in_stalls"] >= held["late_sends"], held
    assert _stall_cause(held).endswith("re-run on a quieter host")

    x = _open_loop_1s(answering, slow_every=10)
    held = x["issuer_stalls"]
    assert held["late_sends"] >= 15 and 4 * held["late_in_stalls"] <= held["late_sends"], held
    assert "were made late by the client's own work" in _stall_cause(held)


def test_a_stretch_the_issuer_was_not_run_outside_its_polls_is_a_stall_too(answering):
    """Not run between two waits (blocked 30 ms after a write, three times: as when stopped
    or kept off the GIL mid-send) is told from the client's own CPU work by the thread's CPU
    time: the stalls are seen, and the sends they made late fall in them."""
    from pytest_inferbench.workload.open_loop import _stall_cause
    held = _open_loop_1s(answering, blocked_at={40, 90, 140})["issuer_stalls"]
    assert held["count"] >= 3 and held["max_ms"] >= 25, held
    # three 30 ms blocks at 200/s make ~18 sends late; a few more fall just after a block
    # (its catch-up burst) or come from the host itself: seen 1 of 20 and 3 of 22 outside
    in_stalls, late = held["late_in_stalls"], held["late_sends"]
    assert in_stalls >= 12 and 4 * in_stalls >= 3 * late, held
    assert _stall_cause(held).endswith("re-run on a quieter host")
