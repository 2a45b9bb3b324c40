"""The plugin end to end, through pytest itself (pytester): collection, selection, results."""

import json

import pytest
import torch

from conftest import FAST, measured_enough

HAS_CUDA = torch.cuda.is_available()
# the spec's cuda cell runs on a GPU machine and skips elsewhere
OUTCOMES = {"passed": 5, "skipped": 0} if HAS_CUDA else {"passed": 4, "skipped": 1}

SPEC = f"""
name: small
defaults: {{{FAST}}}
benchmarks:
  - model: mlp-tiny
    runtime: [torch, onnxruntime]
    batch_size: [1, 4]
    marks: [quick]
  - model: mlp-tiny
    runtime: torch
    device: cuda
"""


@pytest.fixture
def spec(pytester):
    pytester.makefile(".yaml", bench_small=SPEC)
    pytester.makeini("[pytest]\nmarkers =\n    quick: fast cells\n")
    return pytester


def run_file(pytester, name="run.json"):
    return json.loads((pytester.path / name).read_text())


def test_collects_one_item_per_cell_with_readable_ids(spec):
    result = spec.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "bench_small.yaml::mlp-tiny[[]torch-cpu-fp32-bs1-offline[]]",
        "bench_small.yaml::mlp-tiny[[]torch-cpu-fp32-bs4-offline[]]",
        "bench_small.yaml::mlp-tiny[[]onnxruntime-cpu-fp32-bs1-offline[]]",
        "bench_small.yaml::mlp-tiny[[]onnxruntime-cpu-fp32-bs4-offline[]]",
        "bench_small.yaml::mlp-tiny[[]torch-cuda-fp32-bs1-offline[]]",
        "5 tests collected*"])


def test_k_and_m_select_cells(spec):
    result = spec.runpytest("--collect-only", "-q", "-k", "onnxruntime and bs4")
    result.stdout.fnmatch_lines(["*onnxruntime-cpu-fp32-bs4-offline*", "1/5 tests collected*"])
    result = spec.runpytest("--collect-only", "-q", "-m", "quick")
    result.stdout.fnmatch_lines(["4/5 tests collected*"])
    result = spec.runpytest("--collect-only", "-q", "-m", "inferbench and not quick")
    result.stdout.fnmatch_lines(["*torch-cuda*", "1/5 tests collected*"])


def test_runs_measures_and_writes_the_run_file(spec):
    result = spec.runpytest("--infer-json", "run.json", "-rs")
    result.assert_outcomes(**OUTCOMES)
    if not HAS_CUDA:  # the skip names what is missing, at the spec's line
        result.stdout.fnmatch_lines(["SKIPPED [[]1[]] bench_small.yaml:8: device cuda: no CUDA device*"])
    result.stdout.fnmatch_lines(["*inferbench*", "bench_small.yaml", "benchmark*n*p50 ms*p99 ms*",
                                 "run file: *run.json"])
    doc = run_file(spec)
    assert doc["format"] == "pytest-inferbench-run" and doc["version"] == 2   # typed, since 2
    prov = doc["provenance"]
    for key in ("host", "cpu_model", "cpu_count_logical", "python", "start_time", "end_time"):
        assert prov[key], key
    assert {"pytest-inferbench", "torch", "onnxruntime", "numpy"} <= set(prov["versions"])
    by_id = {r["id"]: r for r in doc["results"]}
    assert len(by_id) == 5
    ok = by_id["bench_small.yaml::mlp-tiny[onnxruntime-cpu-fp32-bs4-offline]"]
    assert ok["status"] == "passed" and ok["cell"]["batch_size"] == 4
    lat = ok["latency_ms"]
    assert measured_enough(ok)
    assert set(lat["percentiles"]) == {"p50", "p90", "p95", "p99", "p99.9"}
    assert 0 < lat["percentiles"]["p50"]["value"] <= lat["percentiles"]["p99"]["value"]
    assert lat["percentiles"]["p50"]["lower"] <= lat["percentiles"]["p50"]["value"]
    assert lat["mean"] > 0
    tp = ok["throughput"]
    assert tp["samples_per_s"] == pytest.approx(4 * tp["queries_per_s"])
    # offline throughput is about 1000 / mean latency (back to back, one query at a time)
    assert tp["queries_per_s"] == pytest.approx(1000 / lat["mean"], rel=0.25)
    assert ok["stop"]["reason"] in ("ci_converged", "max_duration")
    assert ok["process"]["peak_rss_mb"] > 10 and ok["process"]["cpu_cores_used"] > 0
    assert ok["runtime"]["name"] == "onnxruntime" and ok["model"]["artifact"].endswith(".onnx")
    cuda = by_id["bench_small.yaml::mlp-tiny[torch-cuda-fp32-bs1-offline]"]
    if not HAS_CUDA:
        assert cuda["status"] == "skipped" and "no CUDA device" in cuda["reason"]
    else:
        assert cuda["status"] == "passed" and measured_enough(cuda)
    # and the default location holds the same run
    runs = list((spec.path / ".inferbench" / "runs").glob("*.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["results"] == doc["results"]


def test_second_run_reuses_the_converted_model(spec):
    spec.runpytest("-k", "onnxruntime and bs1", "--infer-json", "a.json")
    spec.runpytest("-k", "onnxruntime and bs1", "--infer-json", "b.json")
    first, second = (run_file(spec, n)["results"][0]["model"] for n in ("a.json", "b.json"))
    assert first["cache_hit"] is False and first["conversion_s"] > 0
    assert second["cache_hit"] is True and second["artifact"] == first["artifact"]


def test_xdist_gives_the_same_set_of_results(spec):
    serial = spec.runpytest("--infer-json", "serial.json")
    serial.assert_outcomes(**OUTCOMES)
    parallel = spec.runpytest("-n", "2", "--infer-json", "parallel.json")
    parallel.assert_outcomes(**OUTCOMES)
    a = {r["id"]: r["status"] for r in run_file(spec, "serial.json")["results"]}
    b = {r["id"]: r["status"] for r in run_file(spec, "parallel.json")["results"]}
    assert a == b and len(a) == 5
    for r in run_file(spec, "parallel.json")["results"]:
        if r["status"] == "passed":
            assert measured_enough(r) and r["cell"]["runtime"] in ("torch", "onnxruntime")


def test_a_failing_cell_does_not_lose_the_others_and_lf_reruns_it(pytester):
    pytester.makepyfile(broken_models="""
        import torch
        def make():
            raise RuntimeError("weights corrupted on purpose")
        def good():
            return torch.nn.Linear(4, 2), {"x": [4]}
        """)
    pytester.makefile(".yaml", bench_f=f"""
        name: f
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: "broken_models:good", runtime: [torch, onnxruntime]}}
          - {{model: {{factory: "broken_models:make", inputs: {{x: [4]}}}}, runtime: torch}}
        """)
    pytester.syspathinsert()
    result = pytester.runpytest("--infer-json", "run.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: weights corrupted on purpose*"])
    assert "Traceback" not in result.stdout.str()
    doc = run_file(pytester)
    statuses = sorted(r["status"] for r in doc["results"])
    assert statuses == ["failed", "passed", "passed"]
    failed = next(r for r in doc["results"] if r["status"] == "failed")
    assert "weights corrupted on purpose" in failed["reason"]
    rerun = pytester.runpytest("--lf")
    rerun.assert_outcomes(failed=1)


def test_job_file_defaults_apply_and_its_benchmarks_are_collected(pytester):
    pytester.mkdir("suites")
    pytester.makefile(".yaml", **{"suites/bench_a": "name: a\nbenchmarks:\n  - model: mlp-tiny\n"})
    pytester.makefile(".yaml", job=f"""
        name: nightly
        defaults: {{{FAST}, seed: 3}}
        benchmarks:
          - {{model: mlp-tiny, runtime: torch}}
        """)
    result = pytester.runpytest("suites", "--infer-config", "job.yaml", "--infer-json", "run.json")
    result.assert_outcomes(passed=2)
    doc = run_file(pytester)
    assert doc["name"] == "nightly"
    for r in doc["results"]:
        assert r["cell"]["settings"]["seed"] == 3
        assert r["cell"]["settings"]["max_duration"] == 0.25


BAD_CASES = {
    "yaml_syntax": ("name: x\nbenchmarks:\n  - model: [mlp-tiny\n", "bench_bad.yaml:3", "invalid YAML"),
    "unknown_key": ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    batchsize: 4\n",
                    "bench_bad.yaml:4", "did you mean 'batch_size'"),
    "wrong_type": ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    min_queries: many\n",
                   "bench_bad.yaml:4", "min_queries"),
    "batch_zero": ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    batch_size: 0\n",
                   "bench_bad.yaml:4", "positive integer"),
    "runtime": ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    runtime: tensorflow\n",
                "bench_bad.yaml:4", "unknown runtime 'tensorflow'"),
    "family": ("name: x\nbenchmarks:\n  - model: {family: vgg}\n", "bench_bad.yaml:3",
               "unknown model family 'vgg'"),
    "missing_file": ("name: x\nbenchmarks:\n  - model: nets/absent.onnx\n", "bench_bad.yaml:3",
                     "model file not found"),
    "empty_matrix": ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    exclude: [{runtime: onnxruntime}]\n",
                     "bench_bad.yaml:3", "matrix is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_spec_is_a_clean_collection_error(pytester, case):
    text, where, needle = BAD_CASES[case]
    pytester.makefile(".yaml", bench_bad=text)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert where in out and needle in out, out
    assert "Traceback" not in out and "INTERNALERROR" not in out and "plugin.py" not in out


def test_bad_job_file_is_a_usage_error(pytester):
    pytester.makefile(".yaml", job="name: j\ndefaults:\n  min_durration: 1s\n")
    result = pytester.runpytest("--infer-config", "job.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "job.yaml:3" in err and "did you mean 'min_duration'" in err
    assert "Traceback" not in err + result.stdout.str()


def test_missing_job_file_is_a_usage_error(pytester):
    result = pytester.runpytest("--infer-config", "nope.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "job file not found" in result.stderr.str()


def test_quiet_mode_has_no_progress_and_still_summarises(spec):
    result = spec.runpytest("-q", "-k", "onnxruntime and bs1")
    result.assert_outcomes(passed=1)
    assert "q p99" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*mlp-tiny[[]onnxruntime-cpu-fp32-bs1-offline[]]*"])
