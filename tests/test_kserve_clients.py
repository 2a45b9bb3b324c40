"""KServe v2 clients against real servers: the plugin's FastAPI server, Triton (PyTriton) and
MLServer (a server nobody here wrote): tensor formats (JSON, Triton's binary extension),
headers, inputs declared where the metadata has none, and a latency breakdown that covers
the measured queries only, or says why there is none."""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARE

pytest.importorskip("tritonclient", reason="tritonclient not installed: "
                    "pip install 'pytest-inferbench[serve]'")

from pytest_inferbench.core.errors import SpecError  # noqa: E402
from pytest_inferbench.run.cell import run_cell  # noqa: E402
from pytest_inferbench.models.cache import ArtifactCache  # noqa: E402
from pytest_inferbench.serving.client import Endpoint, resolve_headers  # noqa: E402
from pytest_inferbench.serving.statistics import breakdown  # noqa: E402
from pytest_inferbench.serving.launcher import LaunchedServer  # noqa: E402
from pytest_inferbench.spec import load_spec  # noqa: E402

SETTINGS = f"warmup: 3, min_duration: 0.3s, max_duration: 1s, min_queries: 20, {SHARE}"
# a model with a large output: 32768 floats per sample
BIG = "{family: mlp, layers: 1, hidden: 16, features: 8, classes: 32768}"
MLSERVER = Path(__file__).resolve().parents[1] / ".venv-mlserver" / "bin" / "mlserver"


def cells(tmp_path, text, name="bench_k.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return {c.id: c for c in load_spec(f)}


def one_cell(tmp_path, entry, settings=SETTINGS):
    (cell,) = cells(tmp_path, f"name: k\ndefaults: {{{settings}}}\nbenchmarks:\n  - {entry}\n"
                    ).values()
    return cell


# ----------------------------------------------------------------------------- the spec

def test_serving_fields_tensor_format_and_headers(write):
    f = write("bench_f.yaml", """
        name: f
        benchmarks:
          - serving: {system: endpoint, url: "127.0.0.1:8000", model: m, tensor_format: json,
                      headers: {Authorization: "Bearer ${IB_TOKEN}", X-Team: perf}}
          - model: mlp-tiny
            serving: [{system: triton, tensor_format: json}, {system: http, tensor_format: binary}]
        """)
    found = {c.id: c for c in load_spec(f)}
    assert sorted(found) == ["m[bs1-offline-endpoint(http,m,json)]",
                             "mlp-tiny[onnxruntime-cpu-fp32-bs1-offline-http(binary)]",
                             "mlp-tiny[onnxruntime-cpu-fp32-bs1-offline-triton(http,mbs32,"
                             "db100us,json)]"]
    endpoint = found["m[bs1-offline-endpoint(http,m,json)]"]
    assert endpoint.serving.headers == {"Authorization": "Bearer ${IB_TOKEN}", "X-Team": "perf"}
    # header values are never written: not in the cell as results and run files record it
    dumped = json.dumps(endpoint.model_dump(mode="json"))
    assert "headers" not in dumped and "perf" not in dumped
    for bad, message in (
            ("{system: triton, headers: {a: b}}",
             "`headers` does not apply to serving system triton"),
            ("{system: endpoint, url: u, model: m, protocol: grpc, tensor_format: json}",
             "`tensor_format` applies to HTTP"),
            ("{system: endpoint, url: u, model: m, headers: {'bad name': x}}",
             "not an HTTP header name"),
            ("{system: endpoint, url: u, model: m, tensor_format: msgpack}", "expected")):
        f = write("bench_bad.yaml",
                  f"name: b\nbenchmarks:\n  - {{model: mlp-tiny, serving: {bad}}}\n")
        with pytest.raises(SpecError, match=message):
            load_spec(f)


def test_header_values_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("IB_TOKEN", "s3cret")
    assert resolve_headers({"Authorization": "Bearer ${IB_TOKEN}", "X-Team": "perf"}) == {
        "Authorization": "Bearer s3cret", "X-Team": "perf"}
    monkeypatch.delenv("IB_TOKEN")
    with pytest.raises(ValueError, match="serving.headers.Authorization: environment variable "
                                         "IB_TOKEN is not set"):
        resolve_headers({"Authorization": "Bearer ${IB_TOKEN}"})


def test_breakdown_counts_the_servers_requests_next_to_the_clients():
    delta = {"success": (100, 100 * 2_000_000), "fail": (0, 0), "queue": (100, 100 * 500_000),
             "compute_input": (100, 100 * 100_000), "compute_infer": (100, 100 * 1_000_000),
             "compute_output": (100, 100 * 100_000), "execution_count": 50,
             "inference_count": 200}
    b = breakdown(delta, 3.0, measured=100, attempted=100)
    assert b["requests"] == b["client_measured"] == 100 and b["requests_match"]
    assert b["queue_ms"] == pytest.approx(0.5) and b["compute_ms"] == pytest.approx(1.2)
    assert b["other_ms"] == pytest.approx(1.3) and b["avg_batch"] == 4.0
    b = breakdown(delta, 3.0, measured=90, attempted=90)
    assert not b["requests_match"] and "server counted 100" in b["note"]
    assert breakdown({**delta, "success": (0, 0)}, 3.0) is None


# ----------------------------------------------------------------------------- FastAPI

def test_http_server_answers_binary_when_asked_and_json_when_asked(tmp_path):
    cell = one_cell(tmp_path, f"{{model: {BIG}, serving: http}}")
    with LaunchedServer(cell, tmp_path / "cache") as launched:
        x = {"x": np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)}
        auto = Endpoint(launched.url, "model", system="http", timeout=10)
        assert auto.format() == ("binary", "the server metadata lists the binary_tensor_data "
                                           "extension")
        json_ep = Endpoint(launched.url, "model", system="http", timeout=10,
                           tensor_format="json")
        (binary_out,), (json_out,) = auto.infer(x), json_ep.infer(x)
        assert binary_out.shape == (2, 32768) and np.array_equal(binary_out, json_out)
        b, j = auto.overhead(x), json_ep.overhead(x)
        # binary: a short JSON header, then the raw float32 bytes
        assert b["output_tensor_bytes"] == 2 * 32768 * 4
        assert b["response_json_bytes"] < 300
        assert b["response_bytes"] == b["response_json_bytes"] + 2 * 32768 * 4
        # JSON: every float written out as text, several times the bytes
        assert j["response_bytes"] == j["response_json_bytes"] > 3 * b["response_bytes"]
        assert j["decode_ms"] > b["decode_ms"]
        import tritonclient.http as th
        # a raw request asking for one output in JSON and nothing else is answered that way
        raw = th.InferenceServerClient(launched.url, network_timeout=10)
        i = th.InferInput("x", [2, 8], "FP32")
        i.set_data_from_numpy(x["x"], binary_data=True)
        res = raw.infer("model", [i], outputs=[th.InferRequestedOutput("output",
                                                                         binary_data=False)])
        out = res.get_response()["outputs"][0]
        assert "data" in out and "binary_data_size" not in (out.get("parameters") or {})
        with pytest.raises(Exception, match="unknown output"):
            raw.infer("model", [i], outputs=[th.InferRequestedOutput("nope")])


# ----------------------------------------------------------------------------- Triton

@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("triton")
    cell = one_cell(tmp, "{model: mlp-tiny, serving: triton}")
    with LaunchedServer(cell, tmp / "cache") as endpoint:
        yield endpoint


def test_breakdown_brackets_exactly_the_measured_queries(triton, tmp_path):
    """The open-loop client's own warm-up requests (2 x 8) are sent before the window opens:
    the server's count over the window is the client's, so `other_ms` is what it says."""
    token = dict(triton.headers)
    found = cells(tmp_path, f"""
name: b
defaults: {{{SETTINGS}}}
benchmarks:
  - model: mlp-tiny
    batch_size: 2
    workload: [single_stream, {{scenario: server, rate: 60}}]
    serving: {{system: endpoint, url: "{triton.url}", model: model,
               headers: {{triton-access-token: "{token['triton-access-token']}"}}}}
""")
    for cell in found.values():
        result = run_cell(cell, ArtifactCache(tmp_path / "cache"))
        assert result.status == "passed", result.reason
        b = result.serving["breakdown"]
        assert b["requests"] == result.latency.n == b["client_measured"], b
        assert b["requests_match"] and b["server_failed"] == 0
        assert b["other_ms"] > 0 and b["client_mean_ms"] > b["queue_ms"] + b["compute_ms"]
        assert b["avg_batch"] >= 2          # two samples a request, maybe batched further
        assert result.serving["tensor_format"] == "binary"
        assert result.serving["headers"] == ["triton-access-token"]
        server = result.serving["server"]
        assert server["instances"] == 1 and server["max_batch_size"] == 32
        assert server["dynamic_batching"] and server["avg_batch"] == pytest.approx(
            b["avg_batch"], rel=1e-3)
        o = result.serving["overhead"]
        assert o["request_bytes"] > o["input_tensor_bytes"] == 2 * 32 * 4
        assert o["output_tensor_bytes"] == 2 * 10 * 4 and o["decode_ms"] > 0


def test_endpoint_headers_the_token_and_the_summary(triton, pytester, monkeypatch):
    """PyTriton 0.7 protects the statistics API: without its token the result and the
    summary row say why there is no breakdown; with `headers` (a value from the environment)
    there is one, and the token itself is written nowhere."""
    token = triton.headers["triton-access-token"]
    monkeypatch.setenv("IB_TRITON_TOKEN", token)
    pytester.makefile(".yaml", bench_tok=f"""
        name: tok
        defaults: {{{SETTINGS}}}
        benchmarks:
          - name: bare
            serving: {{system: endpoint, url: "{triton.url}", model: model}}
          - name: token
            serving: {{system: endpoint, url: "{triton.url}", model: model, tensor_format: json,
                       headers: {{triton-access-token: "${{IB_TRITON_TOKEN}}"}}}}
          - name: unset
            serving: {{system: endpoint, url: "{triton.url}", model: model,
                       headers: {{triton-access-token: "${{IB_NOT_SET}}"}}}}
        """)
    result = pytester.runpytest_subprocess("--infer-json", "run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    text = (pytester.path / "run.json").read_text()
    doc = {r["cell"]["model_label"]: r for r in json.loads(text)["results"]}
    # (the launched Triton's own command line carries its token, and the process monitor
    # records other processes' command lines: so the file as a whole is not checked)
    for r in doc.values():
        assert token not in json.dumps([r["cell"], r.get("serving"), r.get("reason")])
    assert token not in result.stdout.str()
    bare, with_token = doc["bare"]["serving"], doc["token"]["serving"]
    assert bare["breakdown"] is None
    assert bare["breakdown_note"].startswith("server statistics need the access token: give "
                                             "`headers`")
    assert "triton-access-token" in bare["breakdown_note"]     # the server's own words
    assert with_token["breakdown"]["requests_match"]
    assert with_token["headers"] == ["triton-access-token"]
    assert with_token["tensor_format"] == "json" and bare["tensor_format"] == "binary"
    assert "environment variable IB_NOT_SET is not set" in doc["unset"]["reason"]
    result.stdout.fnmatch_lines(["*bare*no breakdown: server statistics need the access "
                                 "token: give `headers`*"])


# ----------------------------------------------------------------------------- torch runtime

def test_torch_models_behind_triton_and_http(pytester):
    pytester.makefile(".yaml", bench_torch=f"""
        name: torch
        defaults: {{{SETTINGS}}}
        benchmarks:
          - model: mlp-tiny
            runtime: torch
            batch_size: 2
            workload: [single_stream, {{scenario: server, rate: 40}}]
            serving: [http, triton]
        """)
    result = pytester.runpytest_subprocess("--infer-json", "run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    doc = json.loads((pytester.path / "run.json").read_text())
    for r in doc["results"]:
        assert r["model"]["check"]["ok"] and r["errors"]["errors"] == 0, r["id"]
        if r["serving"]["system"] == "http":
            assert r["serving"]["breakdown_note"] == "the server has no statistics API"
            assert r["serving"]["server"]["instances"] == 1
        else:
            assert r["serving"]["breakdown"]["requests_match"]
            assert r["serving"]["server"]["instances"] == 1
            assert r["serving"]["server"]["max_batch_size"] == 32


# ----------------------------------------------------------------------------- MLServer

def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory):
    """MLServer 1.7 with a scikit-learn model, from its own virtual environment
    (.venv-mlserver: python3.11 -m venv; pip install mlserver mlserver-sklearn uvloop==0.21.0)."""
    if not MLSERVER.exists():
        pytest.skip(f"MLServer not installed at {MLSERVER}")
    root = tmp_path_factory.mktemp("mlserver")
    model_dir = root / "models" / "sk"
    model_dir.mkdir(parents=True)
    python = MLSERVER.parent / "python"
    subprocess.run([str(python), "-c",
                    "import numpy as np, joblib, sys\n"
                    "from sklearn.linear_model import LogisticRegression\n"
                    "rng = np.random.default_rng(0); X = rng.normal(size=(64, 4))\n"
                    "joblib.dump(LogisticRegression().fit(X, X[:, 0] > 0), sys.argv[1])\n",
                    str(model_dir / "model.joblib")], check=True, timeout=120)
    (model_dir / "model-settings.json").write_text(json.dumps(
        {"name": "sk", "implementation": "mlserver_sklearn.SKLearnModel",
         "parameters": {"uri": "./model.joblib"}}))
    http, grpc, metrics = _free_ports(3)
    (root / "settings.json").write_text(json.dumps(
        {"http_port": http, "grpc_port": grpc, "metrics_port": metrics, "host": "127.0.0.1",
         "parallel_workers": 0}))
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([str(MLSERVER), "start", str(root)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        endpoint = Endpoint(f"127.0.0.1:{http}", "sk", timeout=5)
        deadline = time.monotonic() + 120
        while not endpoint.ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("MLServer did not start:\n" + (root / "server.log").read_text()[-2000:])
            time.sleep(0.5)
        yield f"127.0.0.1:{http}"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def test_mlserver_json_tensors_and_declared_inputs(mlserver, tmp_path):
    """MLServer lists no inputs in its metadata and takes JSON tensors only over HTTP: the
    spec declares the inputs, auto picks JSON from the server metadata, and the result says
    there is no statistics API."""
    entry = f'serving: {{system: endpoint, url: "{mlserver}", model: sk'
    found = cells(tmp_path, f"""
name: m
defaults: {{{SETTINGS}}}
benchmarks:
  - batch_size: 4
    workload: [single_stream, {{scenario: server, rate: 30}}]
    {entry}, inputs: {{input-0: {{shape: [4], dtype: float32}}}}}}
""")
    for cell in found.values():
        result = run_cell(cell, ArtifactCache(tmp_path / "cache"))
        assert result.status == "passed" and result.latency.n > 0, result.reason
        assert result.errors["errors"] == 0
        s = result.serving
        assert s["tensor_format"] == "json"
        assert "does not list the binary_tensor_data" in s["tensor_format_reason"]
        assert s["breakdown"] is None and s["breakdown_note"].startswith(
            "the server has no statistics API")
        assert s["overhead"]["request_bytes"] == s["overhead"]["request_json_bytes"]
        assert result.model["inputs"] == {"input-0": {"shape": [4, 4], "dtype": "float32"}}
        assert "metadata lists none" in result.model["inputs_declared"]
    # without declared inputs: what to add
    with pytest.raises(ValueError, match="metadata lists no inputs: declare them"):
        run_cell(one_cell(tmp_path, entry + "}"), ArtifactCache(tmp_path / "cache"))
    # binary tensors are what MLServer refuses: the failure names the server's codec error
    binary = run_cell(one_cell(tmp_path, entry + ", tensor_format: binary, "
                                                 "inputs: {input-0: [4]}}"),
                      ArtifactCache(tmp_path / "cache"))
    assert binary.status == "failed" and binary.latency.n == 0
    assert "measured no successful query" in binary.reason and "422" in binary.reason
    assert binary.serving["warmup_errors"]["count"] >= 1
