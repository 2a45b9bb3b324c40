"""runtime python: a factory's plain callable is measured as written, in processes that never
import torch; what it cannot run is said, and a callable that returns no arrays fails."""

import json

from conftest import FAST

CALLABLES = '''
import json, sys
import numpy as np

def _torch_seen(tag):
    with open("torch_seen.jsonl", "a") as out:
        out.write(json.dumps({"tag": tag, "torch": "torch" in sys.modules}) + "\\n")

def scale():
    _torch_seen("factory")
    w = np.random.standard_normal(8).astype(np.float32)    # seeded: the same every call

    def scaled(x, y):
        _torch_seen("call")
        return {"sum": x * w + y, "max": [np.max(x, axis=1)]}
    return scaled, {"x": [8], "y": [8]}

def not_arrays():
    return (lambda x: "done"), {"x": [8]}

def not_callable():
    return 42, {"x": [8]}
'''


def _rows(pytester):
    doc = json.loads((pytester.path / "run.json").read_text())
    return {r["id"].split("::", 1)[1]: r for r in doc["results"]}


def test_a_plain_callable_is_measured_without_torch_in_fresh_processes(pytester):
    pytester.makepyfile(callables=CALLABLES)
    pytester.makefile(".yaml", bench_py=f"""
        name: py
        defaults: {{{FAST}, processes: 2}}
        benchmarks:
          - model: "callables:scale"
            runtime: python
            batch_size: 4
            workload: [offline, {{scenario: server, rate: 200}}]
          - model: "callables:scale"
            runtime: python
            batch_size: 4
            workload: {{scenario: server, rate: 100}}
            serving: http
            processes: 1
        """)
    result = pytester.runpytest_subprocess("--infer-json", "run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)
    rows = _rows(pytester)
    (served,) = [r for k, r in rows.items() if k.endswith("-http]")]
    # the server's outputs agree with the callable's own, run here
    assert served["model"]["check"]["ok"] is True, served["model"]["check"]
    assert served["model"]["check"]["reference"] == "source model fp32 cpu, through the server"
    assert served["latency_ms"]["n"] > 0
    rows = {k: r for k, r in rows.items() if r is not served}
    digests = {r["model"]["digest"] for r in rows.values()}
    for r in rows.values():
        assert r["runtime"]["name"] == "python" and r["latency_ms"]["n"] > 0
        assert r["model"]["call"] == {"by": "position", "callable": "scale.<locals>.scaled"}
        assert r["model"]["check"] == {"reference": True}
        assert r["model"]["inputs"]["x"]["shape"] == [4, 8]
    assert len(digests) == 1, digests   # every process loaded the same model
    seen = [json.loads(line) for line in (pytester.path / "torch_seen.jsonl").open()]
    assert {s["tag"] for s in seen} == {"factory", "call"}
    assert not any(s["torch"] for s in seen), "a process measuring runtime python imported torch"


def test_what_runtime_python_cannot_run_is_said(pytester):
    pytester.makepyfile(callables=CALLABLES)
    pytester.makefile(".yaml", bench_py=f"""
        name: py
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: mlp-tiny, runtime: python}}
          - {{model: "callables:scale", runtime: python, precision: bf16}}
          - {{model: "callables:scale", runtime: python, device: "cuda:0"}}
          - {{model: "callables:not_arrays", runtime: python}}
          - {{model: "callables:not_callable", runtime: python}}
        """)
    result = pytester.runpytest("--infer-json", "run.json", "-p", "no:cacheprovider", "-rs")
    rows = {k.split("[")[0]: r for k, r in _rows(pytester).items()}
    assert rows["mlp-tiny"]["status"] == "skipped"
    assert "runtime python runs the callable a factory returns" in rows["mlp-tiny"]["reason"]
    skipped = sorted(r["reason"] for k, r in _rows(pytester).items()
                     if k.startswith("scale") and r["status"] == "skipped")
    assert len(skipped) == 2
    assert skipped[0].startswith("precision bf16 for runtime python"), skipped
    assert skipped[1].startswith("runtime python runs a callable on the host"), skipped
    assert rows["not_arrays"]["status"] == "failed"
    assert "the model returned a str, not tensors or arrays" in rows["not_arrays"]["reason"]
    assert rows["not_callable"]["status"] == "failed"
    assert "returned a int, which runtime python cannot call" in rows["not_callable"]["reason"]
    result.assert_outcomes(skipped=3, failed=2)
