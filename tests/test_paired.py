"""Paired mode: baseline and candidate interleaved in one session, judged on per-round ratios.
A 10% slowdown is caught, an identical pair passes, and the baseline may be another
interpreter or another git revision."""

import json
import subprocess
import sys
from array import array

import pytest

from pytest_inferbench.core.verdicts import look_schedule
from pytest_inferbench.run.cell import run_cell
from pytest_inferbench.run.paired import run_round
from pytest_inferbench.models.cache import ArtifactCache
from pytest_inferbench.spec import load_spec

from test_gate import SPIN

FAST_AB = "warmup: 3, min_duration: 0.1s, max_duration: 0.3s, min_queries: 20"


def test_looks_double_up_to_the_cap():
    assert look_schedule(10, 40) == [10, 20, 40]
    assert look_schedule(10, 30) == [10, 20, 30]
    assert look_schedule(6, 6) == [6]


class _Side:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def run(self, seconds, out):
        self.log.append(self.name)
        out.append(1)
        return 1


def test_rounds_alternate_the_sides_and_mirror_their_order():
    log = []
    a, b = _Side("A", log), _Side("B", log)
    for i in range(2):
        run_round(a, b, i, 3, 0.01, {"a": array("q"), "b": array("q")})
    assert "".join(log) == "ABBAAB" + "BAABBA"


def test_an_identical_pair_in_process(tmp_path, monkeypatch):
    (tmp_path / "spinmods.py").write_text(SPIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tmp_path / "bench_ab.yaml"
    spec.write_text(f"""
name: ab
defaults: {{{FAST_AB}}}
benchmarks:
  - model: "spinmods:base"
    runtime: python
    gate: {{p50: "+5%", throughput: "-5%"}}
    ab: {{rounds: 4, max_rounds: 8, slice: 0.04s}}
""")
    (cell,) = load_spec(spec)
    result = run_cell(cell, ArtifactCache(tmp_path / "cache"))
    ab = result.ab
    assert ab["verdict"] != "regression"
    assert ab["rounds"] in (4, 8) and ab["looks"] == 2 and ab["baseline"]["changes"] == \
        "the same cell (A/A)"
    assert len(ab["ratios"]["p50"]) == ab["rounds"] and {"p99", "throughput"} <= set(ab["ratios"])
    assert [m["metric"] for m in ab["metrics"]] == ["p50", "throughput"]
    assert result.latency.n > 0 and result.stop.reason.startswith("paired_")
    assert ab["baseline"]["latency_ms"]["n"] > 0


def test_paired_mode_catches_a_10_percent_slowdown_and_passes_an_identical_pair(pytester):
    pytester.makepyfile(spinmods=SPIN)
    pytester.makefile(".yaml", bench_ab=f"""
        name: ab
        defaults: {{{FAST_AB}}}
        benchmarks:
          - model: "spinmods:slow10"
            runtime: python
            gate: {{p50: "+5%", throughput: "-5%"}}
            ab: {{rounds: 6, slice: 0.05s, baseline: {{model: "spinmods:base"}}}}
          - model: "spinmods:base"
            name: identical
            runtime: python
            gate: {{p50: "+5%", throughput: "-5%"}}
            ab: {{rounds: 6, slice: 0.05s}}
        """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-no-html",
                                           "--infer-json", "run.json")
    assert result.ret == 1
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*paired A/B regression after * rounds (candidate: this cell; baseline: model base)",
        "*p50 +*, beyond +5% at 95% confidence (Holm over 2 comparisons, Bonferroni over 2 "
        "paired cells, 3 looks)*",
        "*inferbench gate*", "FAILED: 1 regression*",
        "REGRESSION [[]paired[]] bench_ab.yaml::slow10*"])
    doc = json.loads((pytester.path / "run.json").read_text())
    by = {r["cell"]["id"]: r for r in doc["results"]}
    slow, same = by["slow10[python-cpu-fp32-bs1-offline]"], by["identical[python-cpu-fp32-bs1-offline]"]
    assert slow["status"] == "failed" and slow["ab"]["verdict"] == "regression"
    p50 = next(m for m in slow["ab"]["metrics"] if m["metric"] == "p50")
    assert 1.05 < p50["lo"] <= p50["ratio"] <= p50["hi"] < 1.2     # the injected +10%
    assert same["status"] == "passed" and same["ab"]["verdict"] != "regression"
    assert doc["comparison"]["regressions"]["paired"] == 1
    # the compare CLI re-judges stored paired ratios under another gate
    cli = [sys.executable, "-m", "pytest_inferbench", "compare", "run.json", "run.json"]
    assert subprocess.run(cli, cwd=pytester.path, capture_output=True).returncode == 1
    loose = subprocess.run(cli + ["--gate", "p50=+30%"], cwd=pytester.path,
                           capture_output=True, text=True)
    assert loose.returncode == 0, loose.stdout + loose.stderr


def test_the_baseline_may_be_a_git_revision_or_another_interpreter(pytester):
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        pytest.skip("git not installed")
    pytester.makepyfile(spinmods=SPIN)
    pytester.makefile(".yaml", bench_ab=f"""
        name: ab
        defaults: {{{FAST_AB}}}
        benchmarks:
          - model: "spinmods:base"
            name: vs-git
            runtime: python
            gate: {{p50: "+5%"}}
            ab: {{rounds: 4, max_rounds: 8, slice: 0.05s, switch: 0.025s, baseline: {{git: HEAD}}}}
          - model: "spinmods:base"
            name: vs-python
            runtime: python
            gate: {{p50: "+5%"}}
            ab: {{rounds: 4, max_rounds: 4, slice: 0.05s, switch: 0.025s,
                  baseline: {{python: {sys.executable}}}}}
        """)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q", "."], cwd=pytester.path, check=True)
    subprocess.run(git + ["add", "-A"], cwd=pytester.path, check=True)
    subprocess.run(git + ["commit", "-qm", "v1"], cwd=pytester.path, check=True)
    # the working tree's model is 50% slower than the committed one
    pytester.makepyfile(spinmods=SPIN.replace("return Spin(400), {", "return Spin(600), {"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-no-html",
                                           "--infer-json", "run.json", "--infer-no-gate")
    assert result.ret == 0, result.stdout.str()    # --infer-no-gate: reported, not failed
    doc = json.loads((pytester.path / "run.json").read_text())
    by = {r["cell"]["id"]: r for r in doc["results"]}
    vs_git = by["vs-git[python-cpu-fp32-bs1-offline]"]["ab"]
    assert vs_git["verdict"] == "regression" and vs_git["baseline"]["changes"] == "git HEAD"
    assert vs_git["metrics"][0]["ratio"] > 1.3
    vs_python = by["vs-python[python-cpu-fp32-bs1-offline]"]["ab"]
    assert sys.executable in vs_python["baseline"]["process"]
    assert vs_python["rounds"] == 4 and 0.7 < vs_python["metrics"][0]["ratio"] < 1.4   # A/A
    result.stdout.fnmatch_lines(["*--infer-no-gate: regressions are reported, not failed*"])
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                            cwd=pytester.path, capture_output=True, text=True).stdout
    assert status.split() == ["M", "spinmods.py"]     # the repository was only read


# Served and open-loop pairs: the work is 2 ms (base) or 2.6 ms (slow), so the slowdown shows
# through the HTTP server's own overhead; and an open loop at 100/s keeps both far from
# saturation, where p50 is the service time.
SPIN_MS = SPIN.replace("Spin(400), {", "Spin(2000), {").replace("Spin(440), {", "Spin(2600), {")
PAIR_SERVED = "warmup: 5, min_duration: 0.1s, max_duration: 0.5s, min_queries: 20"


def _results_by_name(pytester) -> dict:
    doc = json.loads((pytester.path / "run.json").read_text())
    return {r["cell"]["id"].split("[")[0]: r for r in doc["results"]}


def test_paired_mode_over_launched_servers_and_serving_configurations(pytester):
    pytester.makepyfile(spinmods=SPIN_MS)
    pytester.makefile(".yaml", bench_ab=f"""
        name: ab
        defaults: {{{PAIR_SERVED}}}
        benchmarks:
          - model: "spinmods:slow10"
            name: served-slow
            runtime: python
            serving: http
            gate: {{p50: "+5%"}}
            ab: {{rounds: 6, slice: 0.1s, baseline: {{model: "spinmods:base"}}}}
          - model: "spinmods:base"
            name: http-vs-inprocess
            runtime: python
            serving: http
            gate: {{p50: "+5%"}}
            ab: {{rounds: 6, slice: 0.1s, baseline: {{serving: inprocess}}}}
        """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-no-html",
                                           "--infer-json", "run.json")
    by = _results_by_name(pytester)
    slow, http = by["served-slow"], by["http-vs-inprocess"]
    assert slow["ab"]["verdict"] == "regression", slow["ab"]["metrics"]
    assert slow["serving"]["system"] == "http" and slow["latency_ms"]["n"] > 0
    assert slow["ab"]["baseline"]["serving"] == "http" and slow["ab"]["baseline"]["url"]
    assert slow["ab"]["baseline"]["changes"] == "model base"
    # the same model behind FastAPI is slower than in this process: the HTTP round trip
    assert http["ab"]["verdict"] == "regression", http["ab"]["metrics"]
    assert http["ab"]["baseline"]["changes"] == "serving inprocess"
    assert http["ab"]["baseline"]["process"] == "in-process"
    assert result.ret == 1


def test_paired_mode_in_the_open_loop_server_scenario(pytester):
    pytester.makepyfile(spinmods=SPIN_MS)
    pytester.makefile(".yaml", bench_ab=f"""
        name: ab
        defaults: {{{PAIR_SERVED}}}
        benchmarks:
          - model: "spinmods:slow10"
            name: open-slow
            runtime: python
            workload: {{scenario: server, rate: 200}}
            gate: {{p50: "+5%"}}
            ab: {{rounds: 5, slice: 0.2s, switch: 0.1s, baseline: {{model: "spinmods:base"}}}}
          - model: "spinmods:base"
            name: open-same
            runtime: python
            workload: {{scenario: server, rate: 200}}
            gate: {{p50: "+5%"}}
            ab: {{rounds: 5, max_rounds: 10, slice: 0.2s, switch: 0.1s}}
          - model: "spinmods:slow10"
            name: open-served
            runtime: python
            serving: http
            workload: {{scenario: server, rate: 200}}
            gate: {{p50: "+5%"}}
            ab: {{rounds: 5, slice: 0.2s, switch: 0.1s, baseline: {{model: "spinmods:base"}}}}
        """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-no-html",
                                           "--infer-json", "run.json")
    by = _results_by_name(pytester)
    for name in ("open-slow", "open-served"):
        r = by[name]
        assert r["ab"]["verdict"] == "regression", (name, r["ab"]["metrics"])
        p50 = next(m for m in r["ab"]["metrics"] if m["metric"] == "p50")
        # +30% work (timed from the schedule: queueing behind a slower query counts too)
        assert 1.05 < p50["lo"] and p50["ratio"] < 2.0
        load = r["load"]
        # every sub-slice sent its own schedule at the rate; lag and validity are kept
        assert load["slices"] == 2 * r["ab"]["rounds"] and load["target_rate"] == 200
        assert 0.9 < load["issued"] / (200 * 0.2 * r["ab"]["rounds"]) < 1.1
        assert load["send_lag_ms"]["p99_worst_slice"] is not None
        assert r["ab"]["baseline"]["load"]["slices"] == load["slices"]
        assert "throughput" not in r["ab"]["ratios"]     # offered, not measured
    same = by["open-same"]
    assert same["status"] == "passed" and same["ab"]["verdict"] != "regression"
    result.assert_outcomes(failed=2, passed=1)


def test_paired_mode_refuses_what_it_cannot_interleave(tmp_path):
    from pytest_inferbench.core.errors import SpecError
    cases = {
        "workload: {scenario: server, arrival: trace, trace: t.csv}": "trace replay",
        "workload: {scenario: concurrency, concurrency: 2}": "not concurrency",
        "workload: {scenario: server, rate: 10}\n    gate: {throughput: '-5%'}":
            "offers a fixed rate",
        "serving: http\n    ab: {baseline: {python: /usr/bin/python3}}": "runs in-process",
    }
    (tmp_path / "t.csv").write_text("0\n0.1\n")
    for extra, message in cases.items():
        ab = "" if "ab:" in extra else "\n    ab: {rounds: 3}"
        spec = tmp_path / "bad.yaml"
        spec.write_text(f"benchmarks:\n  - model: mlp-tiny\n    {extra}{ab}\n")
        with pytest.raises(SpecError, match=message):
            load_spec(spec)
