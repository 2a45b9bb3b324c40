"""The open loop's lean gRPC client (serving/lean_grpc.py): the request it builds before the
window is byte for byte what tritonclient's own gRPC client sends for the same tensors (each
dtype, batch sizes 1 and 3, headers as metadata), an open loop through it completes every
query with its write time, an error status or a stalled reply fails only its own query, and
stop returns at once with calls still open; against a real Triton, a gRPC open-loop cell is
sent by it and valid.

The server here is a real grpc server with a generic handler that takes and returns raw bytes
(it sees exactly what went over the wire) and answers as the test says."""

import concurrent.futures
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import xfail_if_send_lag

grpc = pytest.importorskip("grpc", reason="grpcio not installed: pip install "
                           "'tritonclient[grpc]'")
tc = pytest.importorskip("tritonclient.grpc", reason="tritonclient not installed: "
                         "pip install 'tritonclient[grpc]'")

from pytest_inferbench.serving.client import Endpoint  # noqa: E402
from pytest_inferbench.serving.lean_grpc import (METHOD, BlockingGrpcCall,  # noqa: E402
                                                 LeanGrpcSUT, ServerError)
from pytest_inferbench.serving import lean_h2_open  # noqa: E402
from pytest_inferbench.serving.lean_h2 import BlockingH2Call  # noqa: E402
from pytest_inferbench.serving.lean_h2_open import LeanH2SUT  # noqa: E402
from pytest_inferbench.spec import Settings  # noqa: E402
from pytest_inferbench.workload import arrivals  # noqa: E402
from pytest_inferbench.workload.open_loop import run_open_loop  # noqa: E402

REPLY = tc.service_pb2.ModelInferResponse(model_name="m").SerializeToString()
WARM = 16                       # the client's warm-up calls: two rounds of eight


class Recorder:
    """A KServe v2 gRPC server's ModelInfer, raw: records (request bytes, metadata) of each
    call and answers by mode(n), n counting calls from 1: ok, error (INTERNAL), stall (1 s),
    slow (0.2 s)."""

    def __init__(self):
        self.seen: list[tuple[bytes, dict]] = []
        self.peers: list[str] = []
        self.mode = lambda n: "ok"
        self._lock = threading.Lock()
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8),
                                  options=[("grpc.max_receive_message_length", -1),
                                           # no window raised by BDP probes: a large
                                           # request waits for WINDOW_UPDATEs
                                           ("grpc.http2.bdp_probe", 0)])
        handler = grpc.unary_unary_rpc_method_handler(self.infer)   # no (de)serializers
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService", {"ModelInfer": handler}),))
        self.url = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def infer(self, request: bytes, context):
        with self._lock:
            self.seen.append((request, dict(context.invocation_metadata())))
            self.peers.append(context.peer())       # the client's address: its connection
            mode = self.mode(len(self.seen))
        if mode == "error":
            context.abort(grpc.StatusCode.INTERNAL, "injected failure:  model  crashed")
        time.sleep({"stall": 1.0, "slow": 0.2}.get(mode, 0))
        return REPLY


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.server.stop(grace=None)


ARRAYS = {
    "FP32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "INT64": np.array([[1, -2], [3, 4], [2**40, 0]], dtype=np.int64),
    "INT8": np.array([[-1, 2], [3, -4], [5, 6]], dtype=np.int8),
    "BOOL": np.array([[True], [False], [True]]),
    "BYTES": np.array([[b"one"], [b"two words"], ["café".encode()]], dtype=np.object_),
    "FP16": np.linspace(-2, 2, 6, dtype=np.float16).reshape(3, 2),
}


def _tritonclient_sends(recorder, endpoint, arrays) -> tuple[bytes, dict]:
    """What tritonclient.grpc.InferenceServerClient.infer sends for these tensors."""
    client = tc.InferenceServerClient(recorder.url)
    try:
        client.infer(endpoint.model, endpoint._inputs(tc, arrays),
                     **endpoint._options(tc))
    finally:
        client.close()
    return recorder.seen[-1]


def _lean_sends(recorder, endpoint, arrays) -> tuple[LeanH2SUT, bytes, dict]:
    sut = endpoint.async_sut(arrays)
    assert isinstance(sut, LeanH2SUT) and endpoint.open_loop_client() == "lean-grpc"
    done = []
    issue = sut.start(lambda i, error=None, sent_ns=None: done.append((i, error, sent_ns)),
                      pump=True)
    try:
        assert len(recorder.seen) == WARM         # warmed before the window
        issue(0)
        _pause(sut, True, 5, until=lambda: done)
    finally:
        sut.stop()
    assert done and done[0][0] == 0 and done[0][1] is None and done[0][2] > 0, done
    return sut, *recorder.seen[WARM]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", [*ARRAYS, "all"])
def test_a_prepared_request_is_what_tritonclient_sends(recorder, dtype, batch):
    endpoint = Endpoint(recorder.url, "my model", "grpc", headers={"X-Team": "bench"})
    names = list(ARRAYS) if dtype == "all" else [dtype]
    arrays = {f"in_{n}": ARRAYS[n][:batch] for n in names}
    sut, lean, lean_meta = _lean_sends(recorder, endpoint, arrays)
    ref, ref_meta = _tritonclient_sends(recorder, endpoint, arrays)
    assert sut.request == lean == ref           # prepared, sent, and tritonclient's: one
    assert lean_meta["x-team"] == ref_meta["x-team"] == "bench"
    sent = tc.service_pb2.ModelInferRequest.FromString(lean)
    assert sent.model_name == "my model"
    assert [(t.name, t.datatype, list(t.shape)) for t in sent.inputs] == \
        [(f"in_{n}", n, list(ARRAYS[n][:batch].shape)) for n in names]
    assert len(sent.raw_input_contents) == len(names)


# The open loop's clients: HTTP/2 frames of its own, read by the issuer (as run_open_loop
# drives it) or by a receiving thread (paired mode's slices), and grpcio's call (no hpack).
CLIENTS = ["h2-issuer-reads", "h2-receiving-thread", "grpcio"]


def _sut(client, url, request, timeout):
    if client == "grpcio":
        return LeanGrpcSUT(url, request, timeout)
    return LeanH2SUT(url, METHOD, request, timeout)


def _pause(sut, pump: bool, seconds: float, until=lambda: False) -> None:
    """Wait as the open loop's issuer does: reading the answers itself (pump) or sleeping."""
    end = time.perf_counter_ns() + int(seconds * 1e9)
    while time.perf_counter_ns() < end and not until():
        if pump:
            sut.wait_until(min(end, time.perf_counter_ns() + 2_000_000))
        else:
            time.sleep(0.002)


def _issue_by_mode(recorder, client, modes, n, timeout=0.3, spacing=0.03, arrays=None):
    """n queries through an open loop's client, the server answering the k-th by modes[k]."""
    request = Endpoint(recorder.url, "m", "grpc").prepared_request(
        arrays or {"x": np.ones((1, 4), np.float32)})
    sut, pump = _sut(client, recorder.url, request, timeout), client == "h2-issuer-reads"
    done: dict = {}
    issue = sut.start(lambda i, error=None, sent_ns=None: done.setdefault(i, (error, sent_ns)),
                      **({"pump": True} if pump else {}))
    warm = len(recorder.seen)
    recorder.mode = lambda k: modes[(k - warm - 1) % len(modes)] if k > warm else "ok"
    t0 = time.monotonic()
    for i in range(n):
        issue(i)
        _pause(sut, pump, spacing)
    _pause(sut, pump, 10, until=lambda: len(done) >= n)
    took = time.monotonic() - t0
    sut.stop()
    return done, took, sut


@pytest.mark.parametrize("client", CLIENTS)
def test_error_statuses_and_stalls_fail_only_their_query_and_nothing_hangs(recorder, client):
    modes = ["ok", "error", "stall", "ok"]
    done, took, _ = _issue_by_mode(recorder, client, modes, 8)
    assert sorted(done) == list(range(8))       # every query completed, one way or another
    assert took < 5
    for i, (err, sent_ns) in done.items():
        assert sent_ns > 0, i
        kind = modes[i % len(modes)]
        if kind == "ok":
            assert err is None, (i, err)
        elif kind == "error":                   # the server's status and message
            assert isinstance(err, ServerError), (i, err)
            assert str(err) == "gRPC INTERNAL: injected failure: model crashed"
        else:                                   # past the 0.3 s deadline: a timeout
            assert isinstance(err, TimeoutError), (i, err)


@pytest.mark.parametrize("client", CLIENTS[:2])
def test_requests_past_the_flow_control_windows_and_many_calls_at_once(recorder, client,
                                                                        monkeypatch):
    """5.2 MB requests, five at once: each sent as the server's windows open (its 4 MiB
    stream window too), on a connection of its own meanwhile; then 12 calls in flight at
    once, at most 4 on a connection. The server gets each request whole, every call is
    answered."""
    big = {"in_FP32": np.random.default_rng(0).random((1300, 1000), np.float32)}
    done, _, sut = _issue_by_mode(recorder, client, ["ok"], 5, timeout=5, spacing=0,
                                  arrays=big)
    assert sorted(done) == list(range(5)) and all(e is None for e, _ in done.values()), done
    assert {r for r, _ in recorder.seen} == {sut.request} and len(sut.request) > 5_200_000
    monkeypatch.setattr(lean_h2_open, "_PER_CONNECTION", 4)
    recorder.seen.clear()
    done, _, sut = _issue_by_mode(recorder, client, ["slow"], 12, timeout=5, spacing=0)
    assert sorted(done) == list(range(12)) and all(e is None for e, _ in done.values())
    assert len(set(recorder.peers[-12:])) == 3      # connections: 4, 4 and 4 calls


@pytest.mark.parametrize("client", CLIENTS)
def test_a_server_gone_mid_run_fails_the_calls_it_held_and_nothing_hangs(recorder, client):
    """The server stops with calls in flight: those fail, later calls fail to connect; each
    query is counted once and the run ends."""
    request = Endpoint(recorder.url, "m", "grpc").prepared_request(
        {"x": np.ones((1, 4), np.float32)})
    sut, pump = _sut(client, recorder.url, request, 2.0), client == "h2-issuer-reads"
    done: dict = {}
    issue = sut.start(lambda i, error=None, sent_ns=None: done.setdefault(i, (error, sent_ns)),
                      **({"pump": True} if pump else {}))
    recorder.mode = lambda k: "stall"
    for i in range(3):
        issue(i)
    _pause(sut, pump, 0.1)
    recorder.server.stop(grace=None)
    for i in range(3, 6):
        issue(i)
        _pause(sut, pump, 0.05)
    _pause(sut, pump, 5, until=lambda: len(done) >= 6)
    sut.stop()
    assert sorted(done) == list(range(6)), done
    assert all(isinstance(e, Exception) for e, _ in done.values()), done


@pytest.mark.parametrize("client", CLIENTS)
def test_stop_returns_at_once_with_calls_open(recorder, client):
    request = Endpoint(recorder.url, "m", "grpc").prepared_request(
        {"x": np.ones((1, 4), np.float32)})
    sut, pump = _sut(client, recorder.url, request, 5.0), client == "h2-issuer-reads"
    done = []
    issue = sut.start(lambda i, error=None, sent_ns=None: done.append(i),
                      **({"pump": True} if pump else {}))
    recorder.mode = lambda k: "stall"
    for i in range(3):
        issue(i)
    _pause(sut, pump, 0.1)
    t0 = time.monotonic()
    sut.stop()
    assert time.monotonic() - t0 < 0.5
    time.sleep(1.2)                             # the stalled replies would be in by now
    assert done == []                           # cancelled, not reported: the loop counts them


def test_an_open_loop_through_the_lean_client(recorder):
    """run_open_loop reads the answers on its issuing thread: no other thread reports."""
    sut = Endpoint(recorder.url, "m", "grpc").async_sut({"x": np.ones((2, 3), np.float32)})
    settings = Settings(warmup=0, min_duration=0.5, max_duration=0.5, min_queries=1,
                        ci_width=1e-12)
    reporters = set()
    start = sut.start
    sut.start = lambda complete, **kw: start(
        lambda i, *a, **k: (reporters.add(threading.get_ident()), complete(i, *a, **k)), **kw)
    x = run_open_loop(sut, arrivals.schedule("constant", 100, 0.5), settings, 1.0).extra
    assert x["issued"] >= 40 and x["completed"] == x["issued"], x
    assert x["errors"] == x["timeouts"] == 0
    assert x["send_time"] == "write" and x["writes_reported"] == x["issued"]
    assert reporters == {threading.get_ident()} and sut._thread is None
    queries = recorder.seen[WARM:]
    assert len(queries) == x["issued"] and {r for r, _ in queries} == {sut.request}


def test_a_grpc_open_loop_cell_against_triton(tmp_path):
    """A Triton (PyTriton) the cell launches, over gRPC: the lean client sends the open loop
    (with the access token as metadata), every query is answered, the run is valid, and the
    server's statistics window counts exactly the measured queries (warm-up left out)."""
    pytest.importorskip("pytriton")
    from pytest_inferbench.models.cache import ArtifactCache
    from pytest_inferbench.run.cell import run_cell
    from pytest_inferbench.spec import load_spec
    f = tmp_path / "g.yaml"
    f.write_text(textwrap.dedent("""
        name: g
        defaults: {warmup: 3, min_duration: 0.5s, max_duration: 1s, min_queries: 20}
        benchmarks:
          - model: mlp-tiny
            workload: {scenario: server, arrival: constant, rate: 60}
            serving: {system: triton, protocol: grpc}
        """))
    (cell,) = load_spec(f)
    result = run_cell(cell, ArtifactCache(tmp_path / "cache"))
    assert result.status == "passed", result.reason
    assert result.serving["protocol"] == "grpc"
    assert result.serving["open_loop_client"] == "lean-grpc"
    load = result.load
    assert load["errors"] == load["timeouts"] == 0 and load["completed"] == load["issued"] > 0
    assert load["send_time"] == "write"
    b = result.serving["breakdown"]
    assert b is not None and b["requests"] == result.latency.n, result.serving
    xfail_if_send_lag(load)


# ---------------------------------------------------------------- the closed loop's client

@pytest.mark.parametrize("dtype", ["FP32", "all", "large"])
def test_the_closed_loops_request_is_what_tritonclient_sends(recorder, dtype):
    """Through the closed loop's own HTTP/2 frames (serving/lean_h2.py) to a real grpc
    server: the same message and metadata as tritonclient's call, the reply's bytes back;
    "large" (1.6 MB) is past the server's flow-control windows, sent as they open."""
    endpoint = Endpoint(recorder.url, "my model", "grpc", headers={"X-Team": "bench"})
    names = list(ARRAYS) if dtype == "all" else ["FP32"]
    arrays = {f"in_{n}": ARRAYS[n] for n in names}
    if dtype == "large":
        arrays = {"in_FP32": np.random.default_rng(0).random((400, 1000), np.float32)}
    call = endpoint.blocking_fn(arrays)
    assert isinstance(call, BlockingH2Call) and endpoint.closed_loop_client() == "lean-grpc"
    call.connect(2)                             # two connections opened and warmed
    assert len(recorder.seen) == 2
    for _ in range(3):
        assert call() == REPLY                  # the reply, as bytes
    call.close()
    lean = [seen for seen in recorder.seen]
    ref, ref_meta = _tritonclient_sends(recorder, endpoint, arrays)
    for request, meta in lean:
        assert request == ref and meta["x-team"] == ref_meta["x-team"] == "bench"


@pytest.mark.parametrize("client", [BlockingH2Call, BlockingGrpcCall])
def test_the_closed_loops_client_fails_only_the_query_a_server_spoils(recorder, client):
    """Each failure raises its own error, the next call goes on; the same for grpcio's call,
    the client where hpack is missing."""
    endpoint = Endpoint(recorder.url, "m", "grpc", timeout=0.3)
    request = endpoint.prepared_request({"x": np.ones((1, 4), np.float32)})
    call = BlockingH2Call(recorder.url, METHOD, request, 0.3) if client is BlockingH2Call \
        else BlockingGrpcCall(recorder.url, request, 0.3)
    modes = ["ok", "error", "stall", "ok"]
    recorder.mode = lambda k: modes[(k - 1) % len(modes)]
    outcomes = []
    t0 = time.monotonic()
    for _ in range(2 * len(modes)):
        try:
            assert call() == REPLY
            outcomes.append("ok")
        except ServerError as exc:
            assert str(exc) == "gRPC INTERNAL: injected failure: model crashed"
            outcomes.append("error")
        except TimeoutError as exc:
            assert str(exc) == "no answer in 0.3s"
            outcomes.append("stall")
    call.close()
    assert outcomes == modes * 2 and time.monotonic() - t0 < 5


def test_a_remembered_header_block_is_forgotten_when_hpacks_table_changes():
    """The same bytes mean other headers once a block has added to HPACK's dynamic table:
    a decoded block is reused only until then."""
    from hpack import Decoder, Encoder
    from pytest_inferbench.serving.lean_h2 import Connection
    conn = object.__new__(Connection)           # the decoding part only: no socket
    conn.decoder, conn.decoded = Decoder(), {}
    enc = Encoder()
    answer = [(":status", "200"), ("content-type", "application/grpc")]
    assert conn.decode(enc.encode(answer)) == answer        # literals: the table grows
    indexed = enc.encode(answer)
    assert all(b & 0x80 for b in indexed)                   # one-byte indexed fields only
    assert conn.decode(indexed) == conn.decode(indexed) == answer
    conn.decode(enc.encode([("grpc-message", "x")]))        # a new entry: indices shift
    assert conn.decode(indexed) == [(":status", "200"), ("grpc-message", "x")]
