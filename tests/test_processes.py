"""Cells measured in fresh worker processes (`processes: N`, --infer-processes): the noise split
recovers a known per-process speed offset, a gate fed one process per session misjudges what
N processes judge correctly, and a process that crashes or hangs fails naming itself while the
others' results are kept."""

import json
import math

import numpy as np
import pytest
from conftest import SHARE
from spin_models import SPIN

from pytest_inferbench.core.noise import comparison_half_width, split
from pytest_inferbench.core.verdicts import Obs, decide, stored_judgement

# A controlled system: each fresh process runs at a known speed, from a table by session
# (OFFSET_SESSION) and process (INFERBENCH_PROCESS, "k/N", set by the harness in the child).
# s3: a session whose one process fell into a slow mode (the issue saw modes 35% apart); with
# s2's +24% a fresh clone's CI once learnt in-process noise of ±4.6% and said "undetermined".
# s1's spread (log sd 0.164) is well above the machine's own process-to-process noise: at
# 0.90/1.10 (0.100) a fresh clone's CI once recovered 0.122, past the 20% the test allows.
OFFSETS = {"s1": [0.85, 1.18, 1.00], "s2": [1.12, 0.95, 1.03], "s3": [1.30, 1.0, 1.0]}
MODEL = SPIN + f'''
import sys

OFFSETS = {OFFSETS!r}

def model():
    k = int(os.environ.get("INFERBENCH_PROCESS", "1/1").split("/")[0])
    if os.environ.get("CRASH_IN") == str(k):
        print("about to crash on purpose", file=sys.stderr, flush=True)
        os._exit(7)
    if os.environ.get("HANG_IN") == str(k):
        time.sleep(600)
    factor = OFFSETS[os.environ.get("OFFSET_SESSION", "s1")][k - 1]
    return Spin(400 * factor * float(os.environ.get("SPIN_FACTOR", "1"))), {{"x": [4]}}
'''

SPEC = """
name: p
defaults: {warmup: 3, min_duration: 0.2s, max_duration: 0.5s, min_queries: 50, PROCESSES}
benchmarks:
  - model: "offsetmods:model"
    runtime: python
    gate: {p50: "+5%"}
"""


def _session(pytester, monkeypatch, session, *args, factor=1.0):
    monkeypatch.setenv("OFFSET_SESSION", session)
    monkeypatch.setenv("SPIN_FACTOR", str(factor))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-no-html",
                                         "--infer-no-progress", "--infer-store", "none", *args)


def _last_run(pytester):
    runs = sorted((pytester.path / ".inferbench" / "runs").glob("*.json"),
                  key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text())


def _verdict(run) -> str:
    (entry,) = [e for e in run["comparison"]["verdicts"] if e["mode"] == "stored"]
    return entry["verdict"]


def test_processes_learn_the_process_effect_that_one_process_per_session_misses(
        pytester, monkeypatch):
    pytester.makepyfile(offsetmods=MODEL)
    pytester.makefile(".yaml", bench_p=SPEC.replace("PROCESSES", "processes: 3"))
    saved = _session(pytester, monkeypatch, "s1", "--infer-save", "procs")
    saved.assert_outcomes(passed=3)
    saved.stdout.fnmatch_lines(["*noise over each cell's runs*",
                                "*bench_p.yaml::model*: 3 fresh processes: p50 sd ±*"])
    run = _last_run(pytester)
    assert sorted(r["fresh_process"]["index"] for r in run["results"]) == [1, 2, 3]
    assert len({r["fresh_process"]["pid"] for r in run["results"]}) == 3
    # the between-process part is the known offsets' spread, within 20%
    truth = float(np.std(np.log(OFFSETS["s1"]), ddof=1))
    (noise,) = run["noise"]
    between = noise["metrics"]["p50"]["between_sd"]
    assert abs(between - truth) <= 0.2 * truth, (between, truth)
    # ... and the report's Noise section shows it
    from pytest_inferbench.report.render import render_report
    runs = sorted((pytester.path / ".inferbench" / "runs").glob("*.json"))
    html = render_report([runs[-1]], pytester.path / "r.html").read_text()
    assert "Noise between runs" in html and "fresh processes" in html
    assert f"±{100 * between:.1f}%" in html

    # the same code in a session whose processes fell otherwise: not called a regression
    aa = _session(pytester, monkeypatch, "s2", "--infer-baseline", "procs")
    assert aa.ret == 0, aa.stdout.str()
    assert _verdict(_last_run(pytester)) != "regression"
    # a real slowdown is still caught, from two processes (--infer-processes over the spec;
    # 3x: at s1's spread, 2x from two processes sits within ~6% of what the gate resolves)
    slow = _session(pytester, monkeypatch, "s2", "--infer-baseline", "procs",
                    "--infer-processes", "2", factor=3.0)
    assert slow.ret == 1, slow.stdout.str()
    slow.assert_outcomes(passed=2, failed=1)
    assert _verdict(_last_run(pytester)) == "regression"

    # repeats inside one process: the baseline's noise is that process's luck alone, and a
    # session whose one process fell 44% slower is judged a regression of unchanged code
    pytester.makefile(".yaml", bench_p=SPEC.replace(", PROCESSES", ""))
    _session(pytester, monkeypatch, "s1", "--infer-save", "inproc",
             "--infer-repeat", "3").assert_outcomes(passed=3)
    misjudged = _session(pytester, monkeypatch, "s3", "--infer-baseline", "inproc")
    assert _verdict(_last_run(pytester)) == "regression", misjudged.stdout.str()


def test_a_crashed_or_hung_process_fails_naming_it_and_the_others_are_kept(
        pytester, monkeypatch):
    pytester.makepyfile(offsetmods=MODEL)
    # no figure judged here: its cells may share the CPU (SHARE)
    pytester.makefile(".yaml", bench_p=SPEC.replace(
        "PROCESSES", f"processes: 3, process_timeout: 8s, {SHARE}"))
    monkeypatch.setenv("CRASH_IN", "2")
    monkeypatch.setenv("HANG_IN", "3")
    result = _session(pytester, monkeypatch, "s1", "-v")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*_ model*-p2] _*", "fresh process 2 of 3 (pid *): exited with exit code 7 before "
        "reporting a result; its last lines on stderr:", "    about to crash on purpose",
        "*_ model*-p3] _*", "fresh process 3 of 3 (pid *): did not finish within 8 s "
        "(process_timeout) and was killed"])
    run = _last_run(pytester)
    statuses = sorted(r["status"] for r in run["results"])
    assert statuses == ["failed", "failed", "passed"]
    (kept,) = [r for r in run["results"] if r["status"] == "passed"]
    assert kept["latency_ms"]["n"] >= 50 and kept["fresh_process"]["index"] == 1


def test_runs_go_round_robin_in_a_shuffled_order_per_round(pytester):
    pytester.makefile(".yaml", bench_p="""
        name: p
        defaults: {processes: 3}
        benchmarks:
          - model: [mlp-tiny, resnet-tiny, mlp-small, bert-tiny]
            runtime: torch
        """)
    result = pytester.runpytest("--collect-only", "-q")
    ids = [line for line in result.stdout.lines if "::" in line]
    assert len(ids) == 12
    rounds = [ids[0:4], ids[4:8], ids[8:12]]
    assert not any("-p" in i for i in rounds[0])
    assert all(i.endswith("-p2]") for i in rounds[1]) and all(i.endswith("-p3]") for i in
                                                                rounds[2])
    strip = [[i.rsplit("-p", 1)[0] if "-p" in i else i[:-1] for i in r] for r in rounds]
    assert len({tuple(r) for r in strip}) > 1        # not one fixed order every round


@pytest.mark.parametrize("spec, args, words", [
    ("defaults: {processes: 2}\nbenchmarks:\n  - model: mlp-tiny\n    runtime: torch\n",
     ["--infer-repeat", "2"], "use one of them"),
    ("benchmarks:\n  - model: mlp-tiny\n    runtime: torch\n", ["--infer-processes", "0"],
     "--infer-processes must be at least 1, got 0"),
    ("benchmarks:\n  - model: mlp-tiny\n    runtime: onnxruntime\n    processes: 2\n"
     "    workload: {scenario: server, rate: 50}\n    ab: {baseline: {runtime: torch}}\n", [],
     "`processes` on a paired cell measures both sides in fresh in-process worker processes"),
])
def test_runs_that_cannot_be_measured_are_usage_errors(pytester, spec, args, words):
    pytester.makefile(".yaml", bench_p="name: p\n" + spec)
    result = pytester.runpytest("--collect-only", *args)
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"*{words}*"])


def test_the_split_recovers_known_within_and_between_parts():
    rng = np.random.default_rng(0)
    between, within, n = 0.10, 0.03, 400
    values = np.exp(rng.normal(0, between, n) + rng.normal(0, within, n))
    found = split(values, [within] * n)
    assert found.runs == n
    assert abs(found.between_sd - between) < 0.1 * between
    assert found.within_sd == pytest.approx(within)
    assert found.lower < 1.0 < found.upper


def test_the_resolution_is_the_stored_judgements_own_half_width():
    rng = np.random.default_rng(1)
    base, new = np.exp(rng.normal(0, 0.08, 5)), np.exp(rng.normal(0, 0.08, 5))
    j = stored_judgement("p50", 0.05, [Obs(v, 0.001) for v in base],
                         [Obs(v, 0.001) for v in new], default_noise=0.6)
    decide([j], 0.95)
    sd = math.log1p(j.detail["aa_sd"])
    assert math.log1p(comparison_half_width(sd, 5)) == pytest.approx(j.half_width(0.95),
                                                                     rel=1e-4)


def _result(p50: float, busy: bool = False):
    from pytest_inferbench.core.result import Latency, Percentile, Result
    return Result(id="b.yaml::m", cell={"runtime": "torch", "model_label": "m"},
                  latency_ms=Latency(n=2000, mean=p50, std=0.01 * p50, percentiles={
                      "p50": Percentile(value=p50, lower=0.995 * p50, upper=1.005 * p50)}),
                  process={"host_contended": busy})


def _judge(history_values, new):
    """judge_run over store rows: one row per earlier run (value, busy), oldest first."""
    from pytest_inferbench.core.thresholds import GateConfig
    from pytest_inferbench.gate.history import judge_run
    from pytest_inferbench.gate.history_options import HistoryOptions
    from pytest_inferbench.results.cells import cell_key
    rows = [{"run_id": k, "cell_key": cell_key(_result(v)), "fingerprint": "fp",
             "result": _result(v, busy).to_json(), "started_at": "2026-12-0%d" % (k % 9)}
            for k, (v, busy) in enumerate(history_values)]
    return judge_run(new, "fp", "this machine", rows, GateConfig({"p50": 0.05}),
                     HistoryOptions(), None, baseline={"label": "history"}, new={})


def test_history_learns_no_noise_from_busy_runs_and_does_not_judge_a_busy_run_silently():
    quiet = [(1.0 + 0.004 * (k % 3), False) for k in range(8)]
    # a neighbour's noise, flagged HOST BUSY, within what the outlier rule keeps: learnt, it
    # would widen the interval until +8% could not be told from +5%
    busy = [(1.036, True), (0.972, True)] * 2
    c = _judge(quiet + busy, [_result(1.08)])    # +8% against a 5% gate, on a quiet host
    (entry,) = c["verdicts"]
    (metric,) = entry["metrics"]
    assert entry["verdict"] == "regression", metric
    assert "4 earlier runs on a busy host set aside" in metric["reason"] + metric["noise"]
    # the same run measured on a busy host: set aside and said, neither passed nor failed
    c = _judge(quiet, [_result(1.08, busy=True)])
    assert c["verdicts"] == [] and not c["failed"]
    (item,) = c["not_measured"]
    assert "HOST BUSY" in item["reason"] and "set aside" in item["reason"]
    # some of its processes busy: judged on the quiet ones, and said
    c = _judge(quiet, [_result(1.08), _result(3.0, busy=True)])
    (metric,) = c["verdicts"][0]["metrics"]
    assert c["verdicts"][0]["verdict"] == "regression"
    assert "1 of this run's 2 runs of the cell set aside (busy host)" in metric["noise"]
