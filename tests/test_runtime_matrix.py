"""Every runtime in every scenario: each cell must measure something and raise nothing.

(A runtime whose thread-local state was set up only on the loading thread once made every
open-loop and concurrency query fail, while the cell passed with n = 0.)"""

import json
import os
import shutil

import pytest

from conftest import SHARE

# TorchInductor compiles C++ on the CPU: where a compiler is found, torch.compile cells must
# run; only without one may they skip, and then with the runtime's own reason
CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
COMPILE_SKIP = "torch.compile does not work here: "

# rates well within a ~0.1 ms model's reach and short steps: what is checked is that every
# cell measures and raises nothing, not its figures
SCENARIOS = """
      - offline
      - single_stream
      - {scenario: server, rate: 1000}
      - {scenario: concurrency, concurrency: 2}
      - {scenario: ramp, rate: 1000, step: 1000, max_rate: 2000, step_min_duration: 0.5s}
      - {scenario: capacity, rate: 1000, max_rate: 2000, slo: {p99: 100ms},
         step_min_duration: 0.5s}
"""


# runtime python runs a factory's callable: a two-layer NumPy MLP
NUMPY_MLP = """
import numpy as np

def mlp():
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((16, 32), np.float32), rng.standard_normal((32, 4), np.float32)
    return (lambda x: np.maximum(x @ w1, 0) @ w2), {"x": [16]}
"""


@pytest.mark.parametrize("runtime", ["torch", "torchscript", "torch_compile", "onnxruntime",
                                     "python"])
def test_every_runtime_in_every_scenario(pytester, runtime):
    pytester.makepyfile(numpy_mlp=NUMPY_MLP)
    model = '"numpy_mlp:mlp"' if runtime == "python" else "mlp-tiny"
    (pytester.path / "bench_matrix.yaml").write_text(f"""\
name: matrix
defaults: {{warmup: 5, min_duration: 0.2s, max_duration: 30s, min_queries: 20, ci_width: 0.5,
           {SHARE}}}
benchmarks:
  - model: {model}
    runtime: {runtime}
    batch_size: 2
    workload:{SCENARIOS.rstrip()}
    serving: [inprocess, {{system: inprocess, instances: 2}}]
    exclude:
      - {{workload: {{scenario: offline}}, serving: {{instances: 2}}}}
      - {{workload: {{scenario: single_stream}}, serving: {{instances: 2}}}}
      - {{workload: {{scenario: concurrency}}, serving: {{instances: 2}}}}
      - {{workload: {{scenario: ramp}}, serving: {{instances: 2}}}}
""")
    # a subprocess: torch.compile's state (and inductor's) must not leak between tests
    result = pytester.runpytest_subprocess("--infer-json", "run.json", "-p", "no:cacheprovider")
    doc = json.loads((pytester.path / "run.json").read_text())
    rows = {r["id"].split("::")[1]: r for r in doc["results"]}
    assert len(rows) == 8, sorted(rows)       # 6 scenarios, server and capacity also x2
    for name, r in rows.items():
        if r["status"] == "skipped":
            assert runtime == "torch_compile" and not CXX, (name, r["reason"])
            assert r["reason"].startswith(COMPILE_SKIP), r["reason"]
            continue
        assert r["status"] == "passed", (name, r["reason"])
        assert r["latency_ms"]["n"] > 0, name
        assert r["errors"]["errors"] == 0 and r["errors"]["timeouts"] == 0, (name, r["errors"])
        if r["scenario"] == "capacity":
            assert r["load"]["max_rate"] is not None, (name, r["load"]["steps"])
        if r["scenario"] == "ramp":
            assert r["load"]["knee_rate"] is not None, (name, r["load"]["steps"])
    skipped = sum(r["status"] == "skipped" for r in rows.values())
    result.assert_outcomes(passed=8 - skipped, skipped=skipped)
