"""History mode: change points on synthetic series with known steps, the verdict of a new run
against a learnt run-to-run noise (outliers set aside), which earlier runs are the reference,
and end to end: sessions recorded into the results store, a slowdown gated against them, the
`history` command, and runs from another machine kept out of this machine's series."""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from spin_models import SPIN

from pytest_inferbench.core.fingerprint import fingerprint
from pytest_inferbench.core.verdicts import Obs, decide
from pytest_inferbench.history.changes import Change, change_points, segments
from pytest_inferbench.history.judge import history_judgement, reference

# ----------------------------------------------------------------------------- change points


def _lognormal(rng, levels, sd=0.02, base=10.0):
    """One value per run: base x level x exp(N(0, sd)), log-normal noise around each level."""
    levels = np.asarray(levels, float)
    return list(base * levels * np.exp(rng.normal(0.0, sd, len(levels))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_20_percent_step_is_found_where_it_starts(seed):
    rng = np.random.default_rng(seed)
    values = _lognormal(rng, [1.0] * 20 + [1.2] * 8)
    changes = change_points(values)
    assert len(changes) == 1, changes
    (c,) = changes
    assert c.index == 20                        # the first slowed run
    assert c.pvalue < 0.001
    assert 1.15 < c.ratio < 1.25
    assert c.before == pytest.approx(10.0, rel=0.03)
    assert c.after == pytest.approx(12.0, rel=0.03)
    assert segments(len(values), changes) == [range(20), range(20, 28)]


@pytest.mark.parametrize("seed", range(6))
def test_no_change_points_in_40_aa_runs(seed):
    rng = np.random.default_rng(100 + seed)
    values = _lognormal(rng, [1.0] * 40)
    assert change_points(values) == []
    assert segments(40, []) == [range(40)]


@pytest.mark.parametrize("seed, at", [(7, 15), (8, 9), (9, 31)])
def test_a_doubling_is_found_within_one_run(seed, at):
    rng = np.random.default_rng(seed)
    values = _lognormal(rng, [1.0] * at + [2.0] * (40 - at))
    changes = change_points(values)
    assert changes, "a +100% step was not found"
    best = min(changes, key=lambda c: abs(c.index - at))
    assert abs(best.index - at) <= 1
    assert best.ratio == pytest.approx(2.0, rel=0.1)


def test_a_steady_1_5_percent_step_is_not_a_new_level():
    # CI saw it: runs so steady that a 1.5% step had p < 0.001 restarted the history
    rng = np.random.default_rng(0)
    values = _lognormal(rng, [1.0] * 20 + [1.015] * 20, sd=0.002)
    assert change_points(values) == []
    (c,) = change_points(values, min_magnitude=0.0)     # significant, only too small
    assert c.index == 20
    big = _lognormal(rng, [1.0] * 20 + [1.08] * 20, sd=0.002)
    assert [c.index for c in change_points(big)] == [20]


def test_missing_values_are_skipped_and_indices_stay_those_of_the_series():
    rng = np.random.default_rng(11)
    values = _lognormal(rng, [1.0] * 20 + [1.5] * 10)
    values[5], values[12] = None, math.nan
    (c,) = change_points(values)
    assert c.index == 20                        # not 18: the two holes are not counted out
    assert c.ratio == pytest.approx(1.5, rel=0.05)
    assert change_points([1.0, None, 2.0]) == []    # too short to say anything


# ----------------------------------------------------------------------------- judgement

def _aa_history(seed=0, n=20, sd=0.02):
    rng = np.random.default_rng(seed)
    return [Obs(float(v)) for v in _lognormal(rng, [1.0] * n, sd)]


def _judge(past, value, metric="p50", limit=0.10):
    j = history_judgement(metric, limit, past, [Obs(value)])
    decide([j], 0.95)
    return j


def test_a_30_percent_slowdown_against_20_aa_runs_is_a_regression():
    past = _aa_history()
    mean = math.exp(np.mean([math.log(o.value) for o in past]))
    slow = _judge(past, 1.3 * mean)
    assert slow.verdict == "regression", slow.reason
    assert slow.worse == pytest.approx(math.log(1.3), abs=1e-9)
    assert slow.detail["history_runs"] == 20 and slow.detail["used_runs"] == 20
    assert slow.detail["outliers"] == 0
    assert 0.01 < slow.detail["aa_sd"] < 0.04          # the 2% it was made with
    assert slow.df == 19
    same = _judge(past, mean)
    assert same.verdict == "no change", same.reason
    # throughput: down is worse
    assert _judge(past, mean / 1.3, metric="throughput").verdict == "regression"
    assert _judge(past, mean * 1.3, metric="throughput").verdict == "improvement"


def test_one_outlier_run_in_the_history_is_set_aside():
    past = _aa_history()
    clean = _judge(past, past[-1].value)
    dirty_past = past[:10] + [Obs(3 * past[10].value)] + past[10:]
    dirty = _judge(dirty_past, past[-1].value)
    assert dirty.detail["outliers"] == 1 and dirty.detail["history_runs"] == 21
    assert dirty.detail["used_runs"] == 20
    assert "1 outlier run set aside" in dirty.noise
    assert dirty.detail["aa_sd"] == pytest.approx(clean.detail["aa_sd"], rel=0.30)
    assert dirty.detail["base_mean"] == pytest.approx(clean.detail["base_mean"], rel=0.02)
    assert dirty.verdict == clean.verdict == "no change"
    # the outlier kept in would have made the noise many times wider
    logs = np.log([o.value for o in dirty_past])
    assert math.expm1(float(logs.std(ddof=1))) > 5 * clean.detail["aa_sd"]


def test_too_few_earlier_runs_are_not_judged():
    j = _judge(_aa_history(n=4), 10.0)
    assert j.missing is not None
    assert "history has 4 runs" in j.missing
    assert "needs at least 5 (1 more)" in j.missing
    assert j.verdict == "undetermined"
    none = _judge([], 10.0)
    assert "needs at least 5 (5 more)" in none.missing
    assert history_judgement("p50", 0.1, _aa_history(), [Obs(None)]).missing == \
        "p50 was not measured in this run"


# ----------------------------------------------------------------------------- reference

def test_a_change_two_runs_old_is_judged_against_the_level_before_it():
    ref = reference(20, [Change(18, 1e-6, 10.0, 13.0)], window=30, min_runs=5)
    assert ref.indices == list(range(18))
    assert ref.short_by == 0
    assert "the change at run 19 of 20 has lasted 2 runs" in ref.note


def test_a_change_ten_runs_old_is_the_new_level():
    ref = reference(20, [Change(10, 1e-6, 10.0, 13.0)], window=30, min_runs=5)
    assert ref.indices == list(range(10, 20))
    assert "since the change at run 11 of 20" in ref.note


def test_reference_keeps_the_window_and_counts_what_is_missing():
    assert reference(50, [], window=30, min_runs=5).indices == list(range(20, 50))
    short = reference(3, [], window=30, min_runs=5)
    assert short.indices == [0, 1, 2] and short.short_by == 2
    assert reference(0, []).indices == [] and reference(0, []).short_by == 5


# ----------------------------------------------------------------------------- end to end


STORED = """
name: g
defaults: {warmup: 3, min_duration: 0.1s, max_duration: 0.3s, min_queries: 20}
benchmarks:
  - model: "spinmods:current"
    runtime: python
    gate: {p50: "+10%"}
"""


def _session(pytester, monkeypatch, factor, *args):
    monkeypatch.setenv("SPIN_FACTOR", str(factor))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-no-html",
                                         "--infer-no-progress", *args)


def _run_files(pytester):
    return sorted((pytester.path / ".inferbench" / "runs").glob("*.json"),
                  key=lambda p: p.stat().st_mtime)


def _cli(pytester, *args):
    env = {k: v for k, v in os.environ.items() if k != "INFERBENCH_STORE"}
    return subprocess.run([sys.executable, "-m", "pytest_inferbench", *args],
                          cwd=pytester.path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_history_mode_gates_a_slowdown_and_keeps_other_machines_apart(pytester, monkeypatch):
    monkeypatch.delenv("INFERBENCH_STORE", raising=False)
    pytester.makepyfile(spinmods=SPIN)
    pytester.makefile(".yaml", bench_g=STORED)
    store = pytester.path / ".inferbench" / "results.db"
    for k in range(5):
        r = _session(pytester, monkeypatch, 1, "--infer-baseline", "history")
        assert r.ret == 0, r.stdout.str()
        r.stdout.fnmatch_lines([
            f"results store: sqlite:///{store} (run {k + 1}, 1 results)",
            "*inferbench gate*",
            (f"not compared: bench_g.yaml::current*: p50: the history has {k} run* of this "
             f"cell on this machine*; history mode needs at least 5 ({5 - k} more)")])
        assert "REGRESSION" not in r.stdout.str()
    assert len(_run_files(pytester)) == 5

    slow = _session(pytester, monkeypatch, 1.5, "--infer-baseline", "history")
    assert slow.ret == 1, slow.stdout.str()
    slow.assert_outcomes(passed=1, failed=1)   # the cell passed; the gate's FAILED line counts
    slow.stdout.fnmatch_lines(["*inferbench gate*",
                               "FAILED: 1 regression*against baseline history (sqlite:///*.db)",
                               "REGRESSION [[]history[]] bench_g.yaml::current*",
                               ("*p50: regression: p50 +*, beyond +10% at 95% confidence "
                                "(noise learnt from [45] earlier runs*")])  # 4: 1 outlier set aside
    assert "needs at least" not in slow.stdout.str()
    files = _run_files(pytester)
    assert len(files) == 6
    doc = json.loads(files[-1].read_text())      # every result and the verdict still written
    assert doc["results"][0]["status"] == "passed" and doc["results"][0]["latency_ms"]["n"] > 0
    c = doc["comparison"]
    assert c["failed"] and c["counts"]["regression"] == 1
    (entry,) = c["verdicts"]
    assert entry["mode"] == "history" and entry["verdict"] == "regression"
    (p50,) = entry["metrics"]
    assert p50["metric"] == "p50" and p50["history_runs"] == 5
    # the noise's degrees of freedom: one less than the runs it was learnt from (4 where one
    # of the 5 was set aside as an outlier, as the line above may say)
    learnt = int(re.search(r"noise learnt from (\d) earlier runs", slow.stdout.str()).group(1))
    assert p50["df"] == learnt - 1 and p50["changes"] == []
    assert 1.3 < p50["ratio"] < 1.7

    # the history command: the newest run is a regression against the five before it
    hist = _cli(pytester, "history", "--json", "series.json")
    assert hist.returncode == 1, hist.stdout + hist.stderr
    assert "bench_g.yaml::current[python-cpu-fp32-bs1-offline]" in hist.stdout
    assert ": 6 runs, " in hist.stdout
    assert "newest run: p50 REGRESSION" in hist.stdout
    assert "1 cell: the newest run starts a regression" in hist.stdout
    (series,) = json.loads((pytester.path / "series.json").read_text())
    assert len(series["runs"]) == 6
    assert series["runs"][-1]["p50_ms"] > 1.3 * series["runs"][0]["p50_ms"]
    assert _cli(pytester, "history", "--cell", "nosuchcell").returncode == 0
    bad = _cli(pytester, "history", "--since", "yesterday")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "YYYY-MM-DD" in bad.stderr

    # one of the store's runs, as if from another machine: its own series, said in a note
    moved = json.loads(files[0].read_text())
    moved["provenance"]["cpu_model"] = "Another CPU"
    moved["provenance"]["start_time"] = "2001-01-01T00:00:00+00:00"
    other = pytester.path / "other-machine.json"
    other.write_text(json.dumps(moved))
    imp = _cli(pytester, "store", "import", str(other))
    assert imp.returncode == 0, imp.stderr
    assert imp.stdout.strip() == f"1 run added (1 results), 0 already in sqlite:///{store}"
    again = _session(pytester, monkeypatch, 1, "--infer-baseline", "history")
    again.stdout.fnmatch_lines([
        "*inferbench gate*",
        ("note: 1 cell also ran on other machines or library versions "
         "(bench_g.yaml::current*): those runs are not this machine's history; * is a series "
         "of its own")])
    assert "Another CPU" not in again.stdout.str()     # the note names this machine
    doc = json.loads(_run_files(pytester)[-1].read_text())
    (entry,) = doc["comparison"]["verdicts"]
    # judged on this machine's 6 runs only: the imported one is not among them
    assert entry["metrics"][0]["history_runs"] in (5, 6)
    here = doc["comparison"]["baseline"]["fingerprint"]
    assert here == fingerprint(doc["provenance"]) != fingerprint(moved["provenance"])
