"""Baselines, comparison and gating: the verdict rules on synthetic data, the compare CLI's
verdicts and exit statuses, and the session gate end to end (save, A/A, injected slowdown,
other hardware)."""

import copy
import json
import math

import numpy as np
import pytest
from spin_models import SPIN

from pytest_inferbench.__main__ import main as cli
from pytest_inferbench.core.errors import SpecError
from pytest_inferbench.core.result import log_histogram
from pytest_inferbench.core.stats import percentile_with_bounds
from pytest_inferbench.core.thresholds import GateError, parse_gate
from pytest_inferbench.core.verdicts import (
    Obs,
    decide,
    holm,
    paired_judgement,
    stored_judgement,
)
from pytest_inferbench.gate.compare import (
    compare_runs,
    config_key,
    histogram_percentile,
    mismatches,
    render_text,
)
from pytest_inferbench.spec import load_job, load_spec

# ----------------------------------------------------------------------------- thresholds


def test_thresholds_parse_with_direction_and_merge():
    g = parse_gate({"p99": "+10%", "throughput": "-5%", "confidence": 0.99})
    assert g.thresholds == {"p99": 0.10, "throughput": 0.05} and g.confidence == 0.99
    assert parse_gate("p50=7%,throughput=5%").thresholds == {"p50": 0.07, "throughput": 0.05}
    merged = parse_gate({"p99": None, "p50": "+3%", "noise": "20%"}, base=g)
    assert merged.thresholds == {"throughput": 0.05, "p50": 0.03}
    assert (merged.confidence, merged.noise) == (0.99, 0.20)
    for bad, key, words in [({"p99": "-10%"}, "p99", "wrong way"),
                            ({"throughput": "+5%"}, "throughput", "wrong way"),
                            ({"p99": 10}, "p99", "percentage"),
                            ({"latency": "+5%"}, "latency", "unknown gate metric"),
                            ({"confidence": 1.5}, "confidence", "[0.5, 1)")]:
        with pytest.raises(GateError, match=words.replace("[", r"\[").replace(")", r"\)")) as e:
            parse_gate(bad)
        assert e.value.key == key


def test_spec_gate_baseline_and_ab_fields(write):
    job = load_job(write("job.yaml", """
        name: j
        gate: {p99: "+10%", confidence: 0.99}
        baseline: {compare: latest, save: nightly}
        """))
    assert job.gate.thresholds == {"p99": 0.1} and job.baseline.save == "nightly"
    spec = write("bench_g.yaml", """
        name: g
        gate: {throughput: "-5%"}
        benchmarks:
          - model: mlp-tiny
            gate: {p50: "+3%", p99: off}
            ab: {rounds: 4, baseline: {model: mlp-small, runtime: torch}}
          - model: mlp-tiny
            runtime: torch
        """)
    a, b = load_spec(spec, job=job)
    assert a.gate.thresholds == {"throughput": 0.05, "p50": 0.03} and a.gate.confidence == 0.99
    assert b.gate.thresholds == {"p99": 0.1, "throughput": 0.05}
    assert a.ab.rounds == 4 and a.ab.cap == 16
    assert a.ab.baseline.model_label == "mlp-small" and a.ab.baseline.runtime == "torch"
    assert b.ab is None


@pytest.mark.parametrize("entry, line, words", [
    ('gate: {p50: "-3%"}', 3, "benchmarks[0].gate.p50: gate p50: '-3%' points the wrong way"),
    ("ab: {baseline: {modle: mlp-small}}", 3, "benchmarks[0].ab.baseline.modle: unknown key"),
    ("ab: {rounds: 2}", 3, "benchmarks[0].ab.rounds"),
    ("ab: {baseline: {python: /no/such/python}}", 3, "python interpreter file not found"),
    ("{workload: {scenario: concurrency, concurrency: 2}, ab: {}}", 2, "not concurrency"),
])
def test_spec_errors_name_file_line_and_field(write, entry, line, words):
    if entry.startswith("{"):
        text = f"name: b\nbenchmarks:\n  - {{model: mlp-tiny, {entry[1:]}\n"
    else:
        text = f"name: b\nbenchmarks:\n  - model: mlp-tiny\n    {entry}\n"
    path = write("bench_bad.yaml", text)
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    message = exc.value.render()
    assert message.startswith(f"{path}:") and words in message, message
    assert exc.value.line is not None


# ----------------------------------------------------------------------------- statistics


def test_holm_steps_down():
    assert holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]
    assert holm([0.001, 0.02, 0.04], 0.05) == [True, True, True]
    assert holm([0.2, 0.001], 0.05) == [False, True]
    assert holm([], 0.05) == []


def _ratios(center, sd, n, seed=0):
    """n ratios around `center` (geometric mean exactly center) with log-sd about sd."""
    z = np.random.default_rng(seed).normal(0, 1, n)
    z = (z - z.mean()) / z.std(ddof=1)
    return center * np.exp(sd * z)


def test_paired_verdicts_on_known_ratios():
    def one(metric, limit, ratios):
        j = paired_judgement(metric, limit, ratios)
        decide([j], 0.95)
        return j
    slow = one("p50", 0.05, _ratios(1.20, 0.02, 12))
    assert slow.verdict == "regression" and 1.15 < slow.lo < slow.ratio < slow.hi < 1.25
    assert "beyond +5% at 95% confidence" in slow.reason
    same = one("p50", 0.05, _ratios(1.0, 0.02, 12))
    assert same.verdict == "no change" and same.hi < 1.05
    noisy = one("p50", 0.05, _ratios(1.08, 0.15, 8))
    assert noisy.verdict == "undetermined" and "wider than the threshold +5%" in noisy.reason
    faster = one("throughput", 0.05, _ratios(1.3, 0.02, 12))     # more throughput: better
    assert faster.verdict == "improvement"
    slower_tput = one("throughput", 0.05, _ratios(0.8, 0.02, 12))
    assert slower_tput.verdict == "regression" and "-20" in slower_tput.reason
    near = one("p50", 0.05, _ratios(1.05, 0.01, 12))             # sits on the threshold
    assert near.verdict == "undetermined" and "straddles" in near.reason
    assert one("p50", 0.05, [1.1, 1.2]).verdict == "undetermined"   # too few rounds


def test_many_comparisons_need_more_evidence():
    """A change that is significant alone is not, once 30 other cells were judged too."""
    marginal = paired_judgement("p50", 0.05, _ratios(1.09, 0.03, 8, seed=3))
    decide([marginal], 0.95)
    assert marginal.verdict == "regression"
    family = [paired_judgement("p50", 0.05, _ratios(1.09, 0.03, 8, seed=3))]
    family += [paired_judgement("p50", 0.05, _ratios(1.0, 0.03, 8, seed=10 + i))
               for i in range(30)]
    decide(family, 0.95)
    assert family[0].verdict == "undetermined" and "Holm" in family[0].reason
    looks = paired_judgement("p50", 0.05, _ratios(1.09, 0.03, 8, seed=3))
    decide([looks], 0.95, looks=3, cells=10)
    assert looks.verdict == "undetermined"


def test_stored_verdicts_learn_noise_from_repeats():
    base = [Obs(v, 0.005) for v in (1.00, 1.01, 0.99, 1.005)]
    slow = stored_judgement("p50", 0.10, base, [Obs(1.30, 0.005)], 0.60)
    same = stored_judgement("p50", 0.10, base, [Obs(1.01, 0.005)], 0.60)
    decide([slow, same], 0.95)
    assert slow.verdict == "regression" and "A/A noise learnt from 4+1 runs" in slow.reason
    assert same.verdict == "no change"
    # noisy repeats: a 15% change cannot be told from noise
    noisy = [Obs(v, 0.005) for v in (1.0, 1.2, 0.85, 1.1)]
    j = stored_judgement("p50", 0.10, noisy, [Obs(1.15, 0.005)], 0.60)
    decide([j], 0.95)
    assert j.verdict == "undetermined" and "wider than the threshold" in j.reason


def test_a_single_stored_run_is_judged_with_the_default_noise():
    one = [Obs(1.0, 0.005)]
    j10 = stored_judgement("p50", 0.10, one, [Obs(1.10, 0.005)], 0.60)
    j3x = stored_judgement("p50", 0.10, one, [Obs(3.0, 0.005)], 0.60)
    decide([j10, j3x], 0.95)
    assert j10.verdict == "undetermined" and "no A/A noise learnt" in j10.reason
    assert j3x.verdict == "regression"          # beyond any plausible noise
    quiet = stored_judgement("p50", 0.10, one, [Obs(1.30, 0.005)], 0.05)   # gate noise: 5%
    decide([quiet], 0.95)
    assert quiet.verdict == "regression"


def test_histogram_percentiles_match_the_exact_ones_within_a_bin():
    x = np.sort(np.random.default_rng(1).lognormal(0, 0.4, 5000))
    hist = log_histogram(x)
    for p in (50, 97, 99):
        value, lo, hi = percentile_with_bounds(x, p, 0.95)
        got = histogram_percentile(hist, p, 0.95)
        assert got["value"] == pytest.approx(value, rel=0.021)
        assert got["lower"] == pytest.approx(lo, rel=0.021)
        assert got["upper"] == pytest.approx(hi, rel=0.021)


# ----------------------------------------------------------------------------- run documents

def _result(p50, tput=None, cell_id="m[torch-cpu-fp32-bs1-offline]", repeat=None, line=3,
            device="cpu", gate=None, n=2000, bs=1):
    lat = {"n": n, "mean": p50, "std": 0.05 * p50, "confidence": 0.95,
           "percentiles": {"p50": {"value": p50, "lower": p50 * 0.99, "upper": p50 * 1.01}}}
    r = {"id": f"bench_x.yaml::{cell_id}", "status": "passed", "latency_ms": lat,
         "throughput": {"samples_per_s": tput or 1000.0 / p50},
         "cell": {"id": cell_id, "spec": "bench_x.yaml", "line": line, "model": {"family": "mlp"},
                  "model_label": "m", "runtime": "torch", "device": device, "batch_size": bs,
                  "settings": {"min_duration": line}, "gate": gate}}
    if repeat:
        r["repeat"] = repeat
    return r


def _doc(results, cpu="Some CPU", torch_version="2.13.0"):
    return {"format": "pytest-inferbench-run", "version": 1, "name": "t",
            "provenance": {"host": "h", "cpu_model": cpu, "cpu_count_logical": 2,
                           "versions": {"torch": torch_version}, "python": "3.11.2",
                           "start_time": "2025-01-01T00:00:00+00:00"},
            "results": results}


def test_cells_match_by_configuration_not_by_line_or_settings():
    a, b = _result(1.0, line=3), _result(1.0, line=30)
    assert config_key(a) == config_key(b)
    c = copy.deepcopy(a)
    c["cell"]["batch_size"] = 8
    assert config_key(c) != config_key(a)


def test_compare_lists_one_sided_cells_and_mismatches():
    base = _doc([_result(1.0, repeat=k) for k in (1, 2, 3)] + [_result(1.0, cell_id="gone[x]", bs=2)])
    new = _doc([_result(1.5), _result(1.0, cell_id="added[x]", bs=4)], cpu="Other CPU")
    c = compare_runs(base, new, parse_gate({"p50": "+10%"}))
    assert c["only_in_baseline"] == ["bench_x.yaml::gone[x]"]
    assert c["only_in_new"] == ["bench_x.yaml::added[x]"]
    assert c["mismatch"] == [{"what": "cpu_model", "baseline": "Some CPU", "new": "Other CPU"}]
    assert c["counts"]["regression"] == 1 and not c["gated"] and not c["failed"]
    text = render_text(c)
    assert "not gated" in text and "only in the baseline (1)" in text
    forced = compare_runs(base, new, parse_gate({"p50": "+10%"}), force=True)
    assert forced["failed"]
    assert mismatches(base["provenance"], _doc([], torch_version="2.12")["provenance"]) == [
        {"what": "torch", "baseline": "2.13.0", "new": "2.12"}]


def test_compare_cli_verdicts_and_exit_statuses(tmp_path, capsys):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_doc([_result(v, repeat=k) for k, v in
                                     enumerate((1.0, 1.01, 0.99, 1.0), 1)])))
    same, slow, other = (tmp_path / f"{n}.json" for n in ("same", "slow", "other"))
    same.write_text(json.dumps(_doc([_result(1.01)])))
    slow.write_text(json.dumps(_doc([_result(1.4)])))
    other.write_text(json.dumps(_doc([_result(1.4)], cpu="Other CPU")))
    assert cli(["compare", str(base), str(same), "--gate", "p50=+10%"]) == 0
    assert "no change: 1 cell" in capsys.readouterr().out
    assert cli(["compare", str(base), str(slow), "--gate", "p50=+10%"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED: 1 regression") and "REGRESSION [stored]" in out
    assert "p50 +40.0%" in out and "at 95% confidence" in out
    assert cli(["compare", str(base), str(slow), "--gate", "p50=+50%"]) == 0
    capsys.readouterr()
    assert cli(["compare", str(base), str(other), "--gate", "p50=+10%"]) == 0
    assert "warning: this run differs from the baseline (cpu_model" in capsys.readouterr().out
    assert cli(["compare", str(base), str(other), "--gate", "p50=+10%", "--force"]) == 1
    capsys.readouterr()
    assert cli(["compare", str(base), str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.json: no such file" in err
    (tmp_path / "junk.json").write_text("{}")
    assert cli(["compare", str(base), str(tmp_path / "junk.json")]) == 2
    assert "not a pytest-inferbench run file" in capsys.readouterr().err
    assert cli(["compare", str(base), str(slow), "--gate", "p50=-10%"]) == 2
    assert "points the wrong way" in capsys.readouterr().err
    assert cli(["compare", "nightly", str(slow), "--baselines-dir", str(tmp_path)]) == 2
    assert "nightly: no baseline of that name" in capsys.readouterr().err


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


def _last_run(pytester):
    runs = sorted((pytester.path / ".inferbench" / "runs").glob("*.json"),
                  key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text())


def test_session_saves_a_baseline_and_gates_a_slowdown_not_an_aa_rerun(pytester, monkeypatch):
    pytester.makepyfile(spinmods=SPIN)
    pytester.makefile(".yaml", bench_g=STORED)
    saved = _session(pytester, monkeypatch, 1, "--infer-save", "nightly", "--infer-repeat", "4")
    saved.assert_outcomes(passed=4)
    saved.stdout.fnmatch_lines(["*inferbench gate*", "saved baseline nightly with 4 repeats*"])
    baseline = json.loads((pytester.path / ".inferbench/baselines/nightly.json").read_text())
    assert baseline["repeats"] == 4 and len(baseline["results"]) == 4
    assert sorted(r["repeat"] for r in baseline["results"]) == [1, 2, 3, 4]
    (noise,) = baseline["baseline"]["noise"].values()
    assert noise["repeats"] == 4 and noise["p50"]["sd"] < 0.2

    aa = _session(pytester, monkeypatch, 1, "--infer-baseline", "nightly")
    assert aa.ret == 0, aa.stdout.str()
    aa.assert_outcomes(passed=1)
    assert "REGRESSION" not in aa.stdout.str()
    assert _last_run(pytester)["comparison"]["counts"]["regression"] == 0

    slow = _session(pytester, monkeypatch, 1.5, "--infer-baseline", "nightly")
    assert slow.ret == 1                       # the cell passed; the gate failed the session
    slow.assert_outcomes(passed=1, failed=1)   # the gate's own FAILED line counts
    slow.stdout.fnmatch_lines(["FAILED inferbench gate - 1 regression against nightly*"])
    slow.stdout.fnmatch_lines(["*inferbench gate*", "FAILED: 1 regression*",
                               "REGRESSION [[]stored[]] bench_g.yaml::current*",
                               "*p50: regression: p50 +*, beyond +10% at 95% confidence*"])
    doc = _last_run(pytester)                  # every result and the verdicts still written
    assert doc["results"][0]["status"] == "passed"
    assert doc["comparison"]["failed"] and doc["comparison"]["verdicts"][0]["verdict"] == \
        "regression"

    # the same slowdown against a baseline from other hardware: a warning, no gate
    baseline["provenance"]["cpu_model"] = "Another CPU"
    other = pytester.path / "other.json"
    other.write_text(json.dumps(baseline))
    moved = _session(pytester, monkeypatch, 1.5, "--infer-baseline", str(other))
    assert moved.ret == 0, moved.stdout.str()
    moved.stdout.fnmatch_lines(["*not gated*", "warning: this run differs from the baseline "
                                "(cpu_model: Another CPU -> *", "warning: the baseline ran on "
                                "other hardware or library versions*"])


def test_bad_gate_options_are_usage_errors(pytester):
    pytester.makefile(".yaml", bench_g="name: g\nbenchmarks:\n  - model: mlp-tiny\n")
    result = pytester.runpytest("--infer-gate", "p99=-10%", "--collect-only")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*inferbench: gate p99: '-10%' points the wrong way*"])
    result = pytester.runpytest("--infer-baseline", "missing/run.json", "--collect-only")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*baseline missing/run.json: no such file*"])


def test_a_missing_named_baseline_is_refused_before_anything_runs(pytester):
    """A mistyped name would gate nothing: a usage error at start (test_verdicts.py has the
    way to create it, --infer-save NAME in the same run)."""
    pytester.makefile(".yaml", bench_g="name: g\nbenchmarks:\n  - model: mlp-tiny\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--infer-baseline", "nightly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no baseline named 'nightly' in * (saved: none)*"])


def test_no_gate_reports_but_does_not_fail():
    from pytest_inferbench.gate.session import SessionGate
    base = _doc([_result(1.0, repeat=k) for k in (1, 2, 3)])
    new = _doc([_result(2.0)])
    for enabled, failed in ((True, True), (False, False)):
        gate = SessionGate(enabled=enabled, gate=parse_gate({"p50": "+10%"}))
        gate.comparison = compare_runs(base, new, gate.gate)
        gate.comparison["enabled"] = enabled
        assert gate.failed is failed
        assert any("REGRESSION" in text for text, _ in gate.section())


def test_report_shows_the_verdicts(tmp_path):
    from pytest_inferbench.report.render import render_report
    base = _doc([_result(1.0, repeat=k) for k in (1, 2, 3)])
    new = _doc([_result(2.0)])
    new["comparison"] = compare_runs(base, new, parse_gate({"p50": "+10%"}))
    path = tmp_path / "new.json"
    path.write_text(json.dumps(new))
    html = render_report([path], tmp_path / "r.html").read_text()
    assert "Regressions: comparison with the baseline" in html
    assert "regression (stored)" in html and "+100.0%" in html
    assert not math.isnan(new["comparison"]["verdicts"][0]["metrics"][0]["ratio"])
