"""An open loop that tells the truth about itself: send lag timed to the client's write, the
offered rate against the target, a server on this host counted as the system under test, and
no process of a launched server left behind."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest

from pytest_inferbench.workload.engine import measure_callable
from pytest_inferbench.measure.monitors import ProcessMonitor
from pytest_inferbench.spec import Settings, Workload, load_spec
from pytest_inferbench.workload import arrivals
from pytest_inferbench.workload.open_loop import run_open_loop


def settings(seconds, **kw):
    return Settings(**{"warmup": 0, "min_duration": seconds, "max_duration": seconds,
                       "min_queries": 1, "ci_width": 1e-12, **kw})


# ------------------------------------------------------------------ 1. send lag to the write

class DelayedWriteSUT:
    """issue(i) hands the query to a worker that writes it `delay_s` later and answers it
    `service_s` after the write; `report` says whether it tells the open loop the write."""

    def __init__(self, delay_s, service_s, report=True):
        self.delay_s, self.service_s, self.report = delay_s, service_s, report

    def start(self, complete):
        self.q = queue.SimpleQueue()

        def worker():
            while (i := self.q.get()) is not None:
                time.sleep(self.delay_s)
                wrote = time.perf_counter_ns()
                time.sleep(self.service_s)
                if self.report:
                    complete(i, sent_ns=wrote)
                else:
                    complete(i)
        self.thread = threading.Thread(target=worker, daemon=True)
        self.thread.start()
        return self.q.put

    def stop(self):
        self.q.put(None)
        self.thread.join(2)


def test_a_delayed_write_shows_as_send_lag():
    sched = arrivals.schedule("constant", 40, 1.5)
    told = run_open_loop(DelayedWriteSUT(0.005, 0.004), sched, settings(1.5), 1.0).extra
    # the issuer handed every query over on time; the write came 5 ms later, and says so
    assert told["send_time"] == "write" and told["writes_reported"] == told["issued"]
    assert told["send_lag_issuer_ms"]["p50"] < 1.0
    assert 5.0 <= told["send_lag_ms"]["p50"] < 8.0, told["send_lag_ms"]
    assert 5.0 <= told["client_lag_ms"]["p50"] < 8.0
    # 5 ms of client lag against 4 ms of service: what the run reports is the client's
    assert not told["valid"] and told["lag_effect"] > 0.5
    assert "send lag" in told["invalid_reasons"][0]
    # the same system that does not report its write: the lag is invisible (hand-off only)
    blind = run_open_loop(DelayedWriteSUT(0.005, 0.004, report=False), sched, settings(1.5),
                          1.0).extra
    assert blind["send_time"] == "hand-off" and blind["client_lag_ms"] is None
    assert blind["send_lag_ms"]["p50"] < 1.0


# ------------------------------------------------------------------ 2. the offered rate

@pytest.mark.parametrize("rate", [2, 8, 32, 64])
def test_poisson_schedules_offer_the_nominal_rate(rate):
    s = arrivals.schedule("poisson", rate, 15.0, seed=0)
    assert len(s) == 15 * rate and s.stratified
    o = arrivals.offered(s, len(s), 15.0)
    assert o["departure"] == 0 and not o["flagged"]
    # the arrival process keeps its character: random gaps, no clock
    gaps = np.diff(s) / 1e9
    assert gaps.std() / gaps.mean() > 0.6
    # one seed's i.i.d. draw (what server cells sent before) fell short, and is flagged
    free = arrivals.schedule("poisson", rate, 15.0, seed=0, exact_count=False)
    f = arrivals.offered(free, len(free), 15.0)
    assert f["departure"] < 0 and f["flagged"] == (abs(f["departure"]) > 0.02)


def test_stratified_gaps_are_poisson_like_within_blocks():
    s = arrivals.schedule("poisson", 8, 2000.0, seed=4)
    gaps = np.diff(s) / 1e9
    assert gaps.mean() == pytest.approx(1 / 8, rel=0.01)
    assert 0.85 < gaps.std() / gaps.mean() < 1.0      # 10 queries a block: CV 0.91
    within = gaps[gaps < np.percentile(gaps, 90)]
    assert within.min() < 0.002                        # clumps, as exponential gaps have


def test_a_poisson_cell_at_2_per_s_offers_the_nominal_count():
    r = measure_callable(lambda: None, settings(3.0),
                         Workload(scenario="server", arrival="poisson", rate=2))
    o = r.load["offered"]
    assert r.load["issued"] == 6 and o["queries"] == 6 and o["expected_queries"] == 6
    assert o["departure"] == 0 and not o["flagged"] and o["stratified"]
    assert r.load["offered_rate"] == pytest.approx(2.0) and r.load["target_rate"] == 2


def test_a_converged_run_stops_at_the_end_of_its_block():
    s = Settings(warmup=0, min_duration=0.35, max_duration=5, min_queries=1, ci_width=10,
                 target_percentile=50)
    r = measure_callable(lambda: None, s, Workload(scenario="server", rate=200))
    o = r.load["offered"]
    assert r.stop.reason == "ci_converged" and o["window_s"] < 2
    assert o["window_s"] / o["block_s"] == pytest.approx(round(o["window_s"] / o["block_s"]))
    assert abs(o["queries"] - o["expected_queries"]) <= 1 and not o["flagged"]


def test_departures_where_stratification_does_not_apply_are_flagged(tmp_path):
    # a trace dense at first: the first 2 s of it offer far more than its own mean rate
    f = tmp_path / "trace.csv"
    f.write_text("t\n" + "\n".join(f"{t:.3f}" for t in
                                   [*np.arange(20) * 0.05, *(1 + np.arange(10) * 0.4)]))
    r = measure_callable(lambda: None, settings(2.0),
                         Workload(scenario="server", arrival="trace", trace=str(f)))
    o = r.load["offered"]
    assert o["flagged"] and o["departure"] > 0.5 and "as recorded" in o["note"]
    assert o["target_rate"] == pytest.approx(29 / 4.6, rel=1e-3)
    # gamma as drawn: flagged exactly when over the 5% allowed
    for seed in range(4):
        g = arrivals.schedule("gamma", 8, 3.0, seed=seed, burstiness=0.25)
        og = arrivals.offered(g, len(g), 3.0)
        assert og["flagged"] == (abs(og["departure"]) > arrivals.MAX_OFFER_DEPARTURE)


# ------------------------------------------------------------------ 3. a server on this host

BURNER = textwrap.dedent("""
    import os, socket, sys, threading, time
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4)
    threading.Thread(target=lambda: [s.accept() for _ in range(4)], daemon=True).start()
    open(sys.argv[1] + ".tmp", "w").write(f"{os.getpid()} {s.getsockname()[1]}")
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    end = time.time() + 60
    while time.time() < end:            # busy: the endpoint's own CPU
        sum(range(10000))
""")


def detached(tmp_path, code, *args):
    """A process this one did not start (setsid -f: re-parented, its own session), as a
    server someone started by hand; returns the contents of the file it writes when up."""
    script = tmp_path / f"detached_{len(list(tmp_path.iterdir()))}.py"
    script.write_text(code)
    out = tmp_path / f"{script.stem}.out"
    subprocess.run(["setsid", "-f", sys.executable, str(script), str(out), *args], check=True)
    deadline = time.monotonic() + 240
    while not out.exists():
        assert time.monotonic() < deadline, "the detached process did not start"
        time.sleep(0.1)
    return out.read_text()


def test_a_local_endpoints_processes_are_the_system_under_test(tmp_path):
    pid, port = map(int, detached(tmp_path, BURNER).split())
    try:
        assert pid not in {p.pid for p in psutil.Process().children(recursive=True)}
        monitor = ProcessMonitor()
        monitor.start()
        time.sleep(0.6)                 # not connected: the burner is another process
        apart = monitor.stop()
        burner = psutil.Process(pid)
        with socket.create_connection(("127.0.0.1", port)):
            monitor = ProcessMonitor()
            cpu0, t0 = sum(burner.cpu_times()[:2]), time.perf_counter()
            monitor.start()
            time.sleep(0.6)
            seen = monitor.stop()
            got = (sum(burner.cpu_times()[:2]) - cpu0) / (time.perf_counter() - t0)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert apart["server_processes"] is None
    assert pid in [p["pid"] for p in apart["other_processes"]]
    (server,) = seen["server_processes"]
    assert server["pid"] == pid and f"127.0.0.1:{port}" in server["why"]
    # The burner's share of 2 shared cores is whatever the neighbours leave it (0.68 to 1.07
    # cores in 5 runs here at load ~2.4), so no fixed share is asserted: the monitor must
    # agree with the burner's own CPU time over nearly the same window. Measured gap in those
    # 5 runs: +0.036 to +0.080 cores (our window also holds the monitor's start and stop);
    # the margin is 3x the largest.
    assert "detached" in server["command"]
    assert server["cpu_cores"] == pytest.approx(got, abs=0.25), (server["cpu_cores"], got)
    assert seen["server_cpu_cores"] == pytest.approx(server["cpu_cores"], abs=0.01)
    assert pid not in [p["pid"] for p in seen["other_processes"]]
    # other = the host's busy cores less this process's and the server's (rounded figures:
    # residual 0.000 to 0.066 cores in the 5 runs above; margin 3x)
    busy = seen["cpu_percent_system"] / 100 * psutil.cpu_count()
    expected = busy - seen["tree_cpu_cores_used"] - seen["server_cpu_cores"]
    assert seen["other_cpu_cores"] == pytest.approx(max(0.0, expected), abs=0.2)


# ------------------------------------------------------------------ Triton on this host

TRITON_SPEC = "name: t\nbenchmarks:\n  - {model: mlp-tiny, runtime: onnxruntime, serving: triton}\n"

USER_TRITON = textwrap.dedent("""
    import json, os, signal, sys, time
    from pytest_inferbench.spec import load_spec
    from pytest_inferbench.serving.launcher import LaunchedServer
    out, spec, cache = sys.argv[1:4]
    (cell,) = load_spec(spec)
    server = LaunchedServer(cell, cache)
    server.__enter__()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        http, grpc = server.proc.args[-3:-1]      # the launcher's argv: ... HTTP GRPC METRICS
        open(out + ".tmp", "w").write(json.dumps({"pid": os.getpid(), "leader": server.proc.pid,
                                                  "url": f"127.0.0.1:{http}",
                                                  "grpc": f"127.0.0.1:{grpc}",
                                                  "tag": server.proc.inferbench_tag}))
        os.rename(out + ".tmp", out)
        time.sleep(600)
    finally:
        server.__exit__(None, None, None)
""")


def tagged(tag):
    from pytest_inferbench.serving.launcher import TAG_VARIABLE
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(TAG_VARIABLE) == tag:
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.fixture(scope="module")
def user_triton(tmp_path_factory):
    """A Triton this test session did not launch: started by hand, on this host."""
    pytest.importorskip("tritonclient")
    pytest.importorskip("pytriton")
    tmp = tmp_path_factory.mktemp("user_triton")
    spec = tmp / "t.yaml"
    spec.write_text(TRITON_SPEC)
    info = json.loads(detached(tmp, USER_TRITON, str(spec), str(tmp / "cache")))
    yield info
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 30
    while psutil.pid_exists(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in tagged(info["tag"]):       # whatever a failed stop left
        p.kill()


def test_a_triton_on_this_host_is_the_system_under_test(user_triton, tmp_path):
    from pytest_inferbench.run.cell import run_cell
    from pytest_inferbench.models.cache import ArtifactCache
    f = tmp_path / "e.yaml"
    f.write_text(textwrap.dedent(f"""
        name: e
        defaults: {{warmup: 3, min_duration: 1s, max_duration: 1.5s, min_queries: 10}}
        benchmarks:
          - workload: {{scenario: server, rate: 40}}
            serving: {{system: endpoint, url: "http://{user_triton['url']}", model: model}}
        """))
    (cell,) = load_spec(f)
    result = run_cell(cell, ArtifactCache(tmp_path / "cache"))
    p = result.process
    servers = {s["pid"]: s for s in p["server_processes"]}
    names = " ".join(s["command"] for s in servers.values())
    # tritonserver (listening), PyTriton's Python process that runs the model, the stubs
    assert user_triton["leader"] in servers and "tritonserver" in names
    assert "triton_python_backend_stub" in names
    assert user_triton["pid"] not in servers      # the hand-started parent: another group
    assert p["server_cpu_cores"] > 0
    assert not set(servers) & {o["pid"] for o in p["other_processes"]}
    busy = p["cpu_percent_system"] / 100 * psutil.cpu_count()
    expected = busy - p["tree_cpu_cores_used"] - p["server_cpu_cores"]
    assert p["other_cpu_cores"] == pytest.approx(max(0.0, expected), abs=0.1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_kserve_clients_time_the_write(user_triton, monkeypatch, protocol):
    """tritonclient's asyncio client (gRPC's open-loop client, and HTTP's without
    httptools), its loop held 4 ms before each request goes out (a busy client): the lag
    shows in the figures, and the issuer's own hand-off stays on time."""
    from pytest_inferbench.serving import inputs as endpoint_inputs
    from pytest_inferbench.serving.async_sut import AsyncClientSUT
    from pytest_inferbench.serving.client import Endpoint
    ep = Endpoint(user_triton["url" if protocol == "http" else "grpc"], "model", protocol)
    meta = ep.inputs_metadata()
    arrays = endpoint_inputs.generate(endpoint_inputs.signature_from_metadata(meta, None, 1),
                                      meta, 1, 0)
    original = ep.aio.InferenceServerClient.infer

    async def busy_then_infer(self, *args, **kw):
        time.sleep(0.004)
        return await original(self, *args, **kw)
    monkeypatch.setattr(ep.aio.InferenceServerClient, "infer", busy_then_infer)
    sut = AsyncClientSUT(ep, arrays)
    x = run_open_loop(sut, arrivals.schedule("constant", 40, 1.5), settings(1.5), 2.0).extra
    assert sut.write_hook == ("socket write" if protocol == "http" else "grpc call start")
    assert x["completed"] == x["issued"] > 50 and x["send_time"] == "write"
    assert x["send_lag_issuer_ms"]["p50"] < 1.0
    assert x["client_lag_ms"]["p50"] >= 4.0 and x["send_lag_ms"]["p50"] >= 4.0


def test_the_lean_http_client_writes_from_the_issuer(user_triton):
    """Over HTTP the open loop's client is the lean one (serving/lean_http.py): the request
    prepared before the run, written by the issuer's thread right after its hand-off (a few
    microseconds measured here; 0.1 ms is the bound), every query answered by a Triton this
    session did not launch."""
    from pytest_inferbench.serving import inputs as endpoint_inputs
    from pytest_inferbench.serving.client import Endpoint
    from pytest_inferbench.serving.lean_http import LeanHttpSUT
    ep = Endpoint(user_triton["url"], "model", "http")
    meta = ep.inputs_metadata()
    arrays = endpoint_inputs.generate(endpoint_inputs.signature_from_metadata(meta, None, 1),
                                      meta, 1, 0)
    sut = ep.async_sut(arrays)
    assert isinstance(sut, LeanHttpSUT) and ep.open_loop_client() == "lean-http"
    x = run_open_loop(sut, arrivals.schedule("constant", 100, 1.5), settings(1.5), 2.0).extra
    assert x["completed"] == x["issued"] > 100 and x["errors"] == 0
    assert x["send_time"] == "write"
    assert x["client_lag_ms"]["p50"] < 0.1, x["client_lag_ms"]


# ------------------------------------------------------------------ 4. no orphaned servers

def _dead(pids, timeout=30.0):
    """The (pid, create time) pairs still alive after waiting up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid, created, name in pids:
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append((pid, name))
            except psutil.Error:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.mark.parametrize("killed", ["server", "server and guard"])
def test_no_process_of_a_failed_triton_cell_survives(tmp_path, monkeypatch, killed):
    """The server's Python process dies mid-cell (SIGKILL, itself alone: PyTriton's, which
    started tritonserver), and with it, in the second case, the launcher's guard: Triton's
    Python-backend stub and its helpers are re-parented and ignore SIGTERM. The cell fails,
    the pool stops the server, and nothing of its tree is left."""
    pytest.importorskip("tritonclient")
    pytest.importorskip("pytriton")
    from pytest_inferbench.run.cell import run_cell
    from pytest_inferbench.models.cache import ArtifactCache
    from pytest_inferbench.serving import launcher
    from pytest_inferbench.serving.pool import ServerPool
    f = tmp_path / "t.yaml"
    f.write_text(textwrap.dedent("""
        name: t
        defaults: {warmup: 3, min_duration: 3s, max_duration: 3s, min_queries: 10}
        benchmarks:
          - model: mlp-tiny
            runtime: onnxruntime
            workload: {scenario: server, arrival: constant, rate: 20, timeout: 0.5s}
            serving: triton
        """))
    (cell,) = load_spec(f)
    launched = []
    original = launcher.LaunchedServer.__enter__

    def enter_then_kill_the_leader(self):
        endpoint = original(self)
        tree = launcher.server_processes(self.proc)
        launched.append((self.proc.inferbench_tag,
                         [(p.pid, p.create_time(), p.name()) for p in tree]))
        # the guard's one child is the server (PyTriton's process)
        victims = [p.pid for p in psutil.Process(self.proc.pid).children()]
        if killed == "server and guard":
            victims.append(self.proc.pid)

        def kill():
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
        threading.Timer(1.5, kill).start()
        return endpoint
    monkeypatch.setattr(launcher.LaunchedServer, "__enter__", enter_then_kill_the_leader)
    pool = ServerPool()
    try:
        result = run_cell(cell, ArtifactCache(tmp_path / "cache"), servers=pool)
    except Exception as exc:  # noqa: BLE001 - a cell that raised failed too
        result = exc
    finally:
        pool.close()
    assert isinstance(result, Exception) or result.status == "failed", result.reason
    ((tag, tree),) = launched
    assert len(tree) >= 5           # guard, PyTriton, tritonserver, stub, its helpers
    assert "triton_python_backend_stub" in {name for _, _, name in tree}
    assert _dead(tree, timeout=0) == [] and tagged(tag) == []


SESSION = textwrap.dedent("""
    import json, os, signal, sys
    from pytest_inferbench.spec import load_spec
    from pytest_inferbench.serving.launcher import LaunchedServer, server_processes
    out, spec, cache, how = sys.argv[1:5]
    (cell,) = load_spec(spec)
    server = LaunchedServer(cell, cache)
    server.__enter__()
    tree = [[p.pid, p.create_time(), p.name()] for p in server_processes(server.proc)]
    open(out, "w").write(json.dumps({"tag": server.proc.inferbench_tag, "tree": tree}))
    if how == "killed":             # no atexit, no finally: the kernel tells the leader
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(0)                     # ends without stopping the server: atexit does
""")


@pytest.mark.parametrize("how", ["exit", "killed"])
def test_a_session_that_ends_without_stopping_its_server_leaves_nothing(tmp_path, how):
    pytest.importorskip("tritonclient")
    pytest.importorskip("pytriton")
    spec, script, out = tmp_path / "t.yaml", tmp_path / "session.py", tmp_path / "tree.json"
    spec.write_text(TRITON_SPEC)
    script.write_text(SESSION)
    subprocess.run([sys.executable, str(script), str(out), str(spec), str(tmp_path / "cache"),
                    how], timeout=300)
    info = json.loads(out.read_text())
    tree = [tuple(t) for t in info["tree"]]
    assert "triton_python_backend_stub" in {name for _, _, name in tree}
    try:
        assert _dead(tree) == [] and tagged(info["tag"]) == []
    finally:
        for p in tagged(info["tag"]):
            p.kill()


def test_client_process_runs_report_the_offered_rate_too():
    """A generative open loop sent by client processes (workload/generative_clients.py) says
    what it offered against the target, as the in-process open loop does: the whole
    stratified schedule offers the nominal rate; a run cut short by a drawing short of its
    rate is flagged."""
    from pytest_inferbench.serving.openai_client import RequestRecord
    from pytest_inferbench.workload.failures import ErrorLog
    from pytest_inferbench.workload.generative_metrics import open_extra

    def records(s):
        out = []
        for i, t in enumerate(np.asarray(s)):
            r = RequestRecord(index=i, scheduled_ns=int(t), dispatched_ns=int(t) + 50_000,
                              sent_ns=int(t) + 60_000, end_ns=int(t) + 5_000_000, ok=True)
            r.first_token_ns, r.chunk_ns = r.end_ns - 1_000_000, [r.end_ns - 1_000_000]
            out.append(r)
        return out

    s = arrivals.schedule("poisson", 8, 15.0, seed=0)
    extra = open_extra(records(s), 0, int(15.1e9), "schedule", ErrorLog(), len(s), 0.001, 99.0,
                       s, 15.0)
    assert extra["offered"]["departure"] == 0 and not extra["offered"]["flagged"]
    assert extra["offered_rate"] == pytest.approx(8.0)
    free = arrivals.schedule("poisson", 8, 15.0, seed=0, exact_count=False)
    extra = open_extra(records(free), 0, int(15.1e9), "schedule", ErrorLog(), len(free), 0.001,
                       99.0, free, 15.0)
    assert extra["offered"]["departure"] < 0
    assert extra["offered"]["flagged"] == (abs(extra["offered"]["departure"]) > 0.02)
    # without the schedule (a caller that cannot say), nothing is claimed
    assert open_extra(records(s), 0, int(15.1e9), "schedule", ErrorLog(), len(s), 0.001,
                      99.0)["offered"] is None
