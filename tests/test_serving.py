"""Serving systems with real servers started by the tests: Triton (PyTriton), the FastAPI
baseline, an external endpoint; and the faults a load test must survive."""

import json
import os
import signal
import threading
import time

import pytest

from conftest import SHARE

pytest.importorskip("tritonclient", reason="tritonclient not installed: "
                    "pip install 'pytest-inferbench[serve]'")

from pytest_inferbench.run.cell import run_cell  # noqa: E402
from pytest_inferbench.models.cache import ArtifactCache  # noqa: E402
from pytest_inferbench.serving.launcher import LaunchedServer, ServerError  # noqa: E402
from pytest_inferbench.spec import load_spec  # noqa: E402

SETTINGS = f"warmup: 3, min_duration: 0.3s, max_duration: 1s, min_queries: 20, {SHARE}"


def cells(tmp_path, text, name="bench_s.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return {c.id: c for c in load_spec(f)}


def test_http_and_triton_cells_end_to_end(pytester):
    pytester.makefile(".yaml", bench_serve=f"""
        name: serve
        defaults: {{{SETTINGS}}}
        benchmarks:
          - model: mlp-tiny
            runtime: onnxruntime
            batch_size: 2
            workload: [single_stream, {{scenario: server, rate: 50}}]
            serving: [http, triton, {{system: triton, protocol: grpc, dynamic_batching: false}}]
        """)
    # a subprocess: tritonclient's HTTP stack (gevent) is not importable twice in one process
    result = pytester.runpytest_subprocess("--infer-json", "run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    doc = json.loads((pytester.path / "run.json").read_text())
    for r in doc["results"]:
        assert r["model"]["check"]["ok"], r["id"]          # same outputs as the source model
        assert r["latency_ms"]["n"] > 0
        # sent by the lean clients (gRPC closed loop: serving/lean_h2.py's own frames), and
        # Triton counted at least the queries measured
        client = "open_loop_client" if "server" in r["id"] else "closed_loop_client"
        assert r["serving"][client] == f"lean-{r['serving']['protocol']}", r["id"]
        if "triton" in r["id"]:
            b = r["serving"]["breakdown"]
            assert b["requests"] >= r["latency_ms"]["n"] and b["compute_infer_ms"] > 0
            assert b["queue_ms"] >= 0 and b["client_mean_ms"] >= b["compute_ms"]
        if "server" in r["id"]:
            assert r["load"]["issued"] > 0 and r["load"]["errors"] == 0


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    """One Triton for the module's endpoint tests (they only send to it): ~4 s a start."""
    tmp_path = tmp_path_factory.mktemp("triton")
    (cell,) = cells(tmp_path, f"name: t\ndefaults: {{{SETTINGS}}}\nbenchmarks:\n"
                    f"  - {{model: mlp-tiny, serving: triton}}\n").values()
    with LaunchedServer(cell, tmp_path / "cache") as endpoint:
        yield endpoint


def test_endpoint_reaches_a_running_triton(triton, tmp_path):
    for protocol in ("http",):
        (cell,) = cells(tmp_path, f"""
name: e
defaults: {{{SETTINGS}}}
benchmarks:
  - model: mlp-tiny
    workload: [single_stream]
    serving: {{system: endpoint, url: "http://{triton.url}", model: model, protocol: {protocol}}}
""").values()
        result = run_cell(cell, ArtifactCache(tmp_path / "cache"))
        assert result.model["check"]["ok"] and result.latency.n > 0
        assert result.serving["system"] == "endpoint"


def test_endpoint_without_a_source_model(triton, tmp_path):
    """What perf_analyzer needs is all we need: a URL and a model name; inputs come from the
    server's metadata, and the result says the outputs were not checked."""
    import numpy as np
    np.savez(tmp_path / "real.npz", x=np.ones(32, dtype=np.float32))     # one sample
    found = cells(tmp_path, f"""
name: e
defaults: {{{SETTINGS}}}
benchmarks:
  - batch_size: 2
    workload: [single_stream, {{scenario: server, rate: 50}}]
    serving: {{system: endpoint, url: "{triton.url}", model: model}}
  - name: real
    serving: {{system: endpoint, url: "{triton.url}", model: model, data: real.npz}}
""")
    assert sorted(found) == ["model[bs2-server-poisson50-endpoint(http,model)]",
                             "model[bs2-single_stream-endpoint(http,model)]",
                             "real[bs1-offline-endpoint(http,model)]"]
    for cell in found.values():
        result = run_cell(cell, ArtifactCache(tmp_path / "cache"))
        assert result.status == "passed" and result.latency.n > 0, result.reason
        assert result.model["check"] == {"ok": None, "done": False, "reason":
                                         "no source model: the server's outputs were not checked"}
        assert result.errors["errors"] == 0
    assert result.model["inputs_source"].endswith("real.npz")
    assert result.model["inputs"] == {"x": {"shape": [1, 32], "dtype": "float32"}}


def test_endpoint_errors_carry_the_servers_message(triton, tmp_path):
    (unknown,) = cells(tmp_path, f"""
name: e
defaults: {{{SETTINGS}}}
benchmarks:
  - serving: {{system: endpoint, url: "{triton.url}", model: nosuchmodel}}
""").values()
    with pytest.raises(RuntimeError, match="unknown model.*nosuchmodel|nosuchmodel.*unknown"):
        run_cell(unknown, ArtifactCache(tmp_path / "cache"))
    (bad_shape,) = cells(tmp_path, f"""
name: e
defaults: {{{SETTINGS}}}
benchmarks:
  - serving: {{system: endpoint, url: "{triton.url}", model: model, inputs: {{x: [3, 3]}}}}
""").values()
    with pytest.raises(ValueError, match=r"serving.inputs.x.shape \[3, 3\] does not fit"):
        run_cell(bad_shape, ArtifactCache(tmp_path / "cache"))


def test_consecutive_cells_reuse_one_server(pytester):
    pytester.makefile(".yaml", bench_reuse=f"""
        name: reuse
        defaults: {{{SETTINGS}}}
        benchmarks:
          - model: mlp-tiny
            workload: [single_stream, {{scenario: server, rate: 50}}]
            serving: [http, triton]
          - model: mlp-tiny
            serving: inprocess
        """)
    result = pytester.runpytest_subprocess("--infer-json", "run.json", "-p", "no:cacheprovider",
                                           "-v")
    result.assert_outcomes(passed=5)
    doc = json.loads((pytester.path / "run.json").read_text())
    order = [(r["cell"]["serving"]["system"], r["scenario"]) for r in doc["results"]]
    # cells sharing a server run together: each server launched once, then reused
    assert order == [("http", "single_stream"), ("http", "server"),
                     ("triton", "single_stream"), ("triton", "server"),
                     ("inprocess", "offline")]
    served = [r["serving"] for r in doc["results"][:4]]
    assert [s["reused"] for s in served] == [False, True, False, True]
    assert served[0]["launch_s"] > 0 and served[2]["launch_s"] > 0
    assert served[1]["launch_s"] == served[0]["launch_s"]       # the same launch
    for r in doc["results"][:4]:
        assert r["model"]["check"]["ok"] and r["latency_ms"]["n"] > 0


def test_a_dead_endpoint_fails_fast(tmp_path):
    (cell,) = cells(tmp_path, f"""
name: e
defaults: {{{SETTINGS}}}
benchmarks:
  - model: mlp-tiny
    serving: {{system: endpoint, url: "127.0.0.1:9", model: model}}
""").values()
    t = time.monotonic()
    with pytest.raises(RuntimeError, match="cannot reach a KServe v2 server at 127.0.0.1:9"):
        run_cell(cell, ArtifactCache(tmp_path / "cache"))
    assert time.monotonic() - t < 30


def test_server_that_never_becomes_healthy(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}")
    (tmp_path / "slow_models.py").write_text(
        "import time, torch\n"
        "def make():\n    time.sleep(60)\n    return torch.nn.Linear(4, 2), {'x': [4]}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (cell,) = cells(tmp_path, f"name: h\ndefaults: {{{SETTINGS}}}\nbenchmarks:\n"
                    f"  - {{model: 'slow_models:make', runtime: torch, serving: http}}\n").values()
    server = LaunchedServer(cell, tmp_path / "cache", ready_timeout=3)
    t = time.monotonic()
    with pytest.raises(ServerError, match="not healthy after 3s"):
        with server:
            pass
    assert time.monotonic() - t < 25 and server.proc.poll() is not None   # and it was stopped


def test_server_that_dies_at_start_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}")
    (tmp_path / "bad_models.py").write_text(
        "def make():\n    raise RuntimeError('weights missing')\n")
    (cell,) = cells(tmp_path, f"name: d\ndefaults: {{{SETTINGS}}}\nbenchmarks:\n"
                    f"  - {{model: {{factory: 'bad_models:make', inputs: {{x: [4]}}}}, "
                    f"runtime: torch, serving: http}}\n").values()
    with pytest.raises(ServerError, match="(?s)exited with status.*weights missing"):
        with LaunchedServer(cell, tmp_path / "cache"):
            pass


def test_http_500s_and_a_killed_server_are_counted_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}")
    (tmp_path / "flaky_models.py").write_text(
        "import torch\n"
        "class Flaky(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__(); self.lin = torch.nn.Linear(4, 2); self.n = 0\n"
        "    def forward(self, x):\n"
        "        self.n += 1\n"
        "        if self.n > 3 and self.n % 4 == 0:\n            raise RuntimeError('boom')\n"
        "        return self.lin(x)\n"
        "def make():\n    return Flaky(), {'x': [4]}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (cell,) = cells(tmp_path, f"""
name: f
defaults: {{warmup: 0, min_duration: 1.5s, max_duration: 1.5s, min_queries: 1,
           max_error_rate: 0.9}}
benchmarks:
  - model: "flaky_models:make"
    runtime: torch
    workload: {{scenario: server, arrival: constant, rate: 40, timeout: 0.5s}}
    serving: http
""").values()
    result = run_cell(cell, ArtifactCache(tmp_path / "cache"))
    assert result.load["errors"] >= 5          # HTTP 500 from every fourth call
    assert result.latency.n == result.load["completed"]
    # the server's own message reaches the result; 25% failed is within max_error_rate 90%
    assert "boom" in result.errors["kinds"][0]["message"], result.errors
    assert result.status == "passed"

    # now kill the server half-way through: the run must end, with the failures counted
    from pytest_inferbench.serving import launcher
    original = launcher.LaunchedServer.__enter__

    def enter_and_schedule_kill(self):
        endpoint = original(self)
        threading.Timer(0.8, lambda: os.killpg(self.proc.pid, signal.SIGKILL)).start()
        return endpoint
    monkeypatch.setattr(launcher.LaunchedServer, "__enter__", enter_and_schedule_kill)
    t = time.monotonic()
    result = run_cell(cell, ArtifactCache(tmp_path / "cache"))
    assert time.monotonic() - t < 30
    assert result.load["errors"] + result.load["timeouts"] >= 10
