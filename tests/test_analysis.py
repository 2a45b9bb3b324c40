"""The analysis API on hand-made run files with known answers: the frame's columns, Pareto
frontiers, the best configuration under an SLO, cost and energy, the batch-size model, the
roofline's FLOP counts."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import pytest_inferbench
from pytest_inferbench.analysis import (ResultsError, batch_scaling, best_under_slo,
                                        cost_per_million, fit_batch_model, load_results,
                                        model_work, pareto_frontier, pareto_mask, roofline,
                                        slo_check, with_cost)

MLP = {"family": "mlp", "layers": 1, "hidden": 4, "features": 3, "classes": 2, "seed": 0}


def result(model="m", runtime="onnxruntime", batch=1, p99=10.0, samples_per_s=100.0, *,
           status="passed", device="cpu", scenario="offline", mean=None, p99_bounds=None,
           slo=None, gpu=None, model_spec=None, serving=None, extra=None):
    """One result dict as the plugin writes it, with the numbers a test needs."""
    mean = p99 / 1.5 if mean is None else mean
    lo, hi = p99_bounds or (p99 * 0.95, p99 * 1.05)
    cell_id = f"{model}[{runtime}-{device}-fp32-bs{batch}-{scenario}]"
    r = {
        "id": f"suites/bench_x.yaml::{cell_id}", "status": status, "reason": None,
        "cell": {"id": cell_id, "spec": "suites/bench_x.yaml", "spec_name": "x", "entry": 0,
                 "model": model_spec or MLP, "model_label": model, "runtime": runtime,
                 "runtime_options": {}, "device": device, "precision": "fp32",
                 "batch_size": batch, "threads": None, "workload": {"scenario": scenario},
                 "serving": serving or {"system": "inprocess"}, "settings": {}, "marks": []},
        "scenario": scenario, "batch_size": batch, "valid": True,
    }
    if status == "passed":
        r.update({
            "latency_ms": {"n": 400, "mean": mean, "std": 0.1, "min": mean / 2, "max": p99 * 2,
                           "confidence": 0.95, "percentiles": {
                               "p50": {"value": mean, "lower": mean * 0.98, "upper": mean * 1.02},
                               "p99": {"value": p99, "lower": lo, "upper": hi},
                               "p99.9": {"value": p99 * 1.2, "lower": p99, "upper": None}}},
            "throughput": {"queries_per_s": samples_per_s / batch, "samples_per_s": samples_per_s},
            "stop": {"reason": "ci_converged", "ci_half_width_rel": 0.01},
            "process": {"cpu_cores_used": 1.5, "cpu_percent_system": 80.0, "peak_rss_mb": 300.0},
            "model": {"label": model, "parameters": 26, "check": {"ok": True, "max_rel_err": 1e-7}},
            "runtime": {"name": runtime, "version": "1.0"},
            "gpu": gpu, "slo": slo,
        })
    else:
        r["reason"] = "no CUDA device"
    r.update(extra or {})
    return r


def run_doc(results, name="job", host="bench-1", start="2025-01-31T12:00:00+00:00"):
    return {"format": "pytest-inferbench-run", "version": 1, "name": name,
            "provenance": {"host": host, "start_time": start, "python": "3.11",
                           "versions": {"torch": "2.13.0"},
                           "git": {"commit": "0123456789abcdef", "dirty": True}},
            "results": list(results)}


# ----------------------------------------------------------------------------- the frame

def test_load_results_columns_cover_axes_metrics_and_provenance(tmp_path):
    served = result("net", batch=4, p99=20.0, samples_per_s=400.0, scenario="server",
                    serving={"system": "triton", "protocol": "grpc", "dynamic_batching": True,
                             "max_queue_delay": 0.0001},
                    slo={"verdict": "pass", "percentile": 99, "bound_ms": 50.0,
                         "confidence": 0.99, "queries": 900, "overlatency": 2},
                    gpu={"utilization_pct": {"mean": 70.0, "max": 90.0}, "power_w": {"mean": 200},
                         "energy_j": 40.0},
                    extra={"serving": {"system": "triton", "breakdown": {
                        "queue_ms": 1.0, "compute_ms": 5.0, "compute_infer_ms": 4.5,
                        "other_ms": 2.0, "avg_batch": 3.0}},
                        "load": {"target_rate": 100, "achieved_rate": 99.5,
                                 "send_lag_ms": {"p50": 0.1, "p99": 0.7, "max": 3},
                                 "late_fraction": 0.001, "max_rate": {"value": 180, "upper": 190}},
                        "errors": {"errors": 1, "timeouts": 2, "attempted": 903,
                                   "error_rate": 0.0033},
                        "some_future_field": {"x": 1}})
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run_doc([served, result(status="skipped")])))
    df = load_results(path)
    assert len(df) == 2
    row = df.iloc[0]
    for col in ("run", "run_id", "host", "start_time", "commit", "dirty", "id", "cell_label",
                "status", "valid", "model", "family", "runtime", "runtime_label", "device",
                "precision", "batch_size", "threads", "scenario", "workload", "serving",
                "serving_label", "config", "n", "mean_ms", "p50_ms", "p50_lower_ms",
                "p50_upper_ms", "p90_ms", "p95_ms", "p99_ms", "p99_lower_ms", "p99_upper_ms",
                "p99.9_ms", "p99.9_upper_ms", "queries_per_s", "samples_per_s", "stop_reason",
                "ci_half_width_rel", "cpu_cores_used", "peak_rss_mb", "gpu_util_pct",
                "gpu_power_w", "energy_j", "energy_per_sample_j", "queue_ms", "compute_ms",
                "other_ms", "avg_batch", "target_rate", "achieved_rate", "send_lag_p99_ms",
                "late_fraction", "max_rate", "slo_verdict", "slo_confidence", "errors",
                "timeouts", "error_rate", "parameters", "check_ok", "runtime_version",
                "histogram", "cell"):
        assert col in df.columns, col
    assert row["host"] == "bench-1" and row["commit"] == "0123456789abcdef" and row["dirty"]
    assert row["model"] == "net" and row["family"] == "mlp" and row["batch_size"] == 4
    assert row["scenario"] == "server" and row["serving"] == "triton"
    assert "triton" in row["serving_label"] and "grpc" in row["serving_label"]
    assert row["p99_ms"] == 20.0 and row["p99_lower_ms"] == 19.0 and row["p99_upper_ms"] == 21.0
    assert math.isnan(row["p99.9_upper_ms"])          # no upper bound with too few samples
    assert math.isnan(row["p90_ms"])                  # a percentile the run did not ask for
    assert row["samples_per_s"] == 400.0 and row["queries_per_s"] == 100.0
    assert row["queue_ms"] == 1.0 and row["compute_ms"] == 5.0 and row["avg_batch"] == 3.0
    assert row["gpu_util_pct"] == 70.0 and row["energy_j"] == 40.0
    assert row["energy_per_sample_j"] == pytest.approx(40.0 / (400 * 4))   # derived: n x batch
    assert row["slo_verdict"] == "pass" and row["slo_confidence"] == 0.99
    assert row["max_rate"] == 180 and row["send_lag_p99_ms"] == 0.7
    assert row["errors"] == 1 and row["timeouts"] == 2
    assert "batch size: 4" in row["config"] and "model: net" in row["config"]
    skipped = df.iloc[1]
    assert skipped["status"] == "skipped" and skipped["reason"] == "no CUDA device"
    assert skipped["n"] == 0 and math.isnan(skipped["p99_ms"]) and math.isnan(skipped["queue_ms"])


def test_load_results_reads_directories_journals_and_tells_runs_apart(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "20250131-120000-1.json").write_text(json.dumps(run_doc([result()])))
    (runs / "20250201-120000-2.json").write_text(json.dumps(
        run_doc([result(p99=12.0)], start="2025-02-01T12:00:00+00:00")))
    # a session that crashed: only its journal
    journal = runs / "20250202-120000-3.partial.jsonl"
    journal.write_text(json.dumps({"name": "job", "provenance": {"host": "bench-2"}}) + "\n"
                       + json.dumps(result(p99=14.0)) + "\n")
    # a session still running next to its own finished file is read once
    (runs / "20250131-120000-1.partial.jsonl").write_text(journal.read_text())
    (runs / ".tmp.json.tmp").write_text("{")
    df = pytest_inferbench.load_results(runs)
    assert list(df["p99_ms"]) == [10.0, 12.0, 14.0]
    assert df["run"].nunique() == 3 and list(df["run_index"]) == [0, 1, 2]
    assert df["run"].iloc[0] == "job @ bench-1, 2025-01-31 12:00"
    assert df["run"].iloc[2].endswith("(partial)")
    # a file named twice counts once; runs alike in name, host and time get the file's id
    twice = load_results([runs / "20250131-120000-1.json", runs, run_doc([result()])])
    assert len(twice) == 4
    assert twice["run"].iloc[0] == "job @ bench-1, 2025-01-31 12:00 [20250131-120000-1]"
    assert twice["run"].iloc[3] == "job @ bench-1, 2025-01-31 12:00 [run4]"


@pytest.mark.parametrize("content, message", [
    ('{"x": 1}', "not a pytest-inferbench run file"),
    ("{", "not valid JSON"),
])
def test_load_results_refuses_what_is_not_a_run_file(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=message):
        load_results(path)


def test_load_results_refuses_a_directory_without_run_files(tmp_path):
    with pytest.raises(ResultsError, match="no run files"):
        load_results(tmp_path)


# ----------------------------------------------------------------------------- Pareto

def test_pareto_mask_on_a_known_set():
    # (throughput up, p99 down): B dominates C, D dominates E, A dominates F; G has a NaN
    points = {"A": (100, 10), "B": (200, 20), "C": (150, 25), "D": (300, 40), "E": (250, 50),
              "F": (100, 12), "G": (500, float("nan"))}
    mask = pareto_mask(np.array(list(points.values())), ["max", "min"])
    assert {k for k, m in zip(points, mask) if m} == {"A", "B", "D"}
    # minimise both (cost, latency)
    mask = pareto_mask(np.array([[1, 5], [2, 4], [3, 3], [3, 6], [1, 5]]), ["min", "min"])
    assert list(mask) == [True, True, True, False, True]     # ties are all kept
    with pytest.raises(ValueError):
        pareto_mask(np.array([[1, 2]]), ["up", "min"])


def test_pareto_frontier_is_per_model_and_skips_failed_and_invalid():
    results = [result("a", batch=b, samples_per_s=t, p99=p)
               for b, t, p in ((1, 100, 10), (2, 200, 20), (3, 150, 25), (4, 300, 40))]
    invalid = result("a", batch=5, samples_per_s=1000, p99=1)
    invalid["valid"] = False
    results += [invalid, result("a", batch=6, status="skipped"),
                result("b", batch=1, samples_per_s=50, p99=5)]
    df = load_results(run_doc(results))
    front = pareto_frontier(df)
    assert list(zip(front["model"], front["batch_size"])) == [("a", 1), ("a", 2), ("a", 4),
                                                              ("b", 1)]
    with_invalid = pareto_frontier(df, only_valid=False)
    assert list(with_invalid[with_invalid["model"] == "a"]["batch_size"]) == [5]
    # against cost: cheaper and faster
    priced = with_cost(df, {"cpu": 3.6})
    cost_front = pareto_frontier(priced, {"cost_per_million": "min", "p99_ms": "min"})
    assert set(cost_front[cost_front["model"] == "a"]["batch_size"]) == {1, 2, 4}


# ----------------------------------------------------------------------------- SLO

def test_best_under_slo_picks_the_highest_throughput_within_the_bound():
    results = [
        result("a", batch=1, samples_per_s=100, p99=10, p99_bounds=(9, 11)),
        result("a", batch=2, samples_per_s=200, p99=28, p99_bounds=(26, 31)),  # CI straddles 30
        result("a", batch=3, samples_per_s=150, p99=25, p99_bounds=(24, 27)),
        result("a", batch=4, samples_per_s=900, p99=45, p99_bounds=(40, 50)),  # over the bound
        result("a", batch=1, samples_per_s=80, p99=8, device="cuda"),
        result("b", batch=1, samples_per_s=999, p99=31, p99_bounds=(30.5, 33)),  # none qualifies
    ]
    df = load_results(run_doc(results))
    best = best_under_slo(df, bound_ms=30, percentile=99)
    got = {(r["model"], r["device"]): r for _, r in best.iterrows()}
    assert set(got) == {("a", "cpu"), ("a", "cuda")}
    top = got[("a", "cpu")]
    assert top["batch_size"] == 2 and top["candidates"] == 3
    assert top["slo_check"] == "undetermined"          # the interval reaches over 30 ms
    assert top["slo_check_basis"] == "percentile CI"
    # conservative: the upper bound must be within the bound too
    safe = best_under_slo(df, 30, 99, conservative=True)
    safe_top = safe[(safe["model"] == "a") & (safe["device"] == "cpu")].iloc[0]
    assert safe_top["batch_size"] == 3 and safe_top["slo_check"] == "pass"
    assert safe_top["slo_check_confidence"] == pytest.approx(0.975)   # one side of a 95% CI
    assert best_under_slo(df, bound_ms=1).empty


def test_slo_check_prefers_the_cells_own_early_stopping_verdict():
    row = load_results(run_doc([result(p99=40, slo={
        "verdict": "pass", "percentile": 99.0, "bound_ms": 50.0, "confidence": 0.99,
        "queries": 1000, "overlatency": 3})])).iloc[0]
    assert slo_check(row, 50, 99) == {"verdict": "pass", "confidence": 0.99,
                                      "basis": "early stopping"}
    other = slo_check(row, 30, 99)       # another bound: judged from the interval
    assert other["verdict"] == "fail" and other["basis"] == "percentile CI"


# ----------------------------------------------------------------------------- cost, energy

def test_cost_per_million_and_price_lookup_order():
    assert cost_per_million(1000.0, 3.6) == pytest.approx(1.0)
    assert math.isnan(cost_per_million(0.0, 3.6))
    df = load_results([run_doc([result(samples_per_s=1000), result(device="cuda:1",
                                                                   samples_per_s=2000)]),
                       run_doc([result(samples_per_s=1000)], host="big-box")])
    priced = with_cost(df, {"cpu": 3.6, "cuda": 7.2, "big-box": 36.0})
    assert list(priced["hourly_price"]) == [3.6, 7.2, 36.0]   # device type; host label first
    assert list(priced["cost_per_million"].round(6)) == [1.0, 1.0, 10.0]
    assert priced["cost_per_million"].isna().sum() == 0
    unpriced = with_cost(df, {"cuda:0": 1.0})
    assert unpriced["cost_per_million"].isna().all()


def test_energy_per_inference_from_the_gpu_monitor():
    df = load_results(run_doc([
        result(batch=2, device="cuda", gpu={"energy_j": 10.0}),                 # 400 q x 2
        result(batch=1, device="cuda", gpu={"energy_j": 10.0, "energy_per_sample_j": 0.5}),
        result(batch=1)]))
    e = with_cost(df, None)["energy_per_inference_j"]
    assert e.iloc[0] == pytest.approx(10.0 / 800) and e.iloc[1] == 0.5 and math.isnan(e.iloc[2])


# ----------------------------------------------------------------------------- batch scaling

def test_fit_batch_model_recovers_fixed_and_per_sample_cost():
    rng = np.random.default_rng(0)
    sizes = np.array([1, 2, 4, 8, 16])
    timings = 2.0 + 0.5 * sizes
    noisy = timings * (1 + rng.normal(0, 0.01, len(sizes)))
    fit = fit_batch_model(sizes, noisy)
    assert fit.fixed_ms == pytest.approx(2.0, abs=0.15)
    assert fit.per_sample_ms == pytest.approx(0.5, abs=0.02)
    assert fit.predict(32) == pytest.approx(18.0, rel=0.05)       # an untested batch size
    assert fit.throughput(32) == pytest.approx(32 / 18.0 * 1000, rel=0.05)
    assert 0 < fit.loo_max_rel_err < 0.05 and fit.loo_mean_rel_err <= fit.loo_max_rel_err
    assert fit.r2 > 0.99
    exact = fit_batch_model([1, 2, 3], [3, 5, 7])
    assert exact.fixed_ms == pytest.approx(1) and exact.per_sample_ms == pytest.approx(2)
    assert exact.loo_max_rel_err == pytest.approx(0, abs=1e-9)
    # a bend the linear model misses shows as a leave-one-out error
    bent = fit_batch_model([1, 2, 4, 8], [1.0, 1.1, 1.2, 8.0])
    assert bent.loo_max_rel_err > 0.5
    two = fit_batch_model([1, 8], [2, 9])
    assert math.isnan(two.loo_max_rel_err) and "needs >= 3" in two.describe()
    with pytest.raises(ValueError, match="two distinct"):
        fit_batch_model([4, 4], [1, 2])


def test_batch_scaling_fits_each_configuration_measured_at_several_sizes():
    results = [result("m", runtime=rt, batch=b, mean=fixed + per * b, p99=2 * (fixed + per * b),
                      samples_per_s=1000 * b / (fixed + per * b))
               for rt, fixed, per in (("torch", 1.0, 0.25), ("onnxruntime", 0.5, 0.1))
               for b in (1, 4, 16)]
    results.append(result("single", batch=1))
    fits = batch_scaling(load_results(run_doc(results)))
    assert list(fits["runtime_label"]) == ["torch", "onnxruntime"]
    assert fits["fixed_ms"].round(6).tolist() == [1.0, 0.5]
    assert fits["per_sample_ms"].round(6).tolist() == [0.25, 0.1]
    assert fits.iloc[0]["batch_sizes"] == [1, 4, 16]


# ----------------------------------------------------------------------------- roofline

# FLOPs and parameters of the presets as torch counts them (FlopCounterMode on the built module
# at batch 1; sum of parameters' numel): the analytic count must agree exactly.
TORCH_COUNTS = {"mlp-small": (300_032, 150_794), "resnet-tiny": (12_683_776, 310_746),
                "resnet18": (3_628_146_688, 11_689_512), "resnet50": (8_178_368_512, 25_557_032),
                "resnet101": (15_602_810_880, 44_549_160),
                "bert-tiny": (117_440_512, 4_319_744), "bert-base": (22_347_251_712, 108_593_664)}


@pytest.mark.parametrize("preset", sorted(TORCH_COUNTS))
def test_model_work_counts_flops_of_generated_models(preset):
    from pytest_inferbench.spec.families import PRESETS
    work = model_work(PRESETS[preset])
    assert (work["flops_per_sample"], work["parameters"]) == TORCH_COUNTS[preset]


def test_model_work_small_cases():
    work = model_work(MLP)                  # Linear 3->4, Linear 4->2: 20 multiply-adds
    assert work["flops_per_sample"] == 40 and work["parameters"] == 26
    assert model_work({"path": "x.onnx", "kind": "file"}) is None
    assert model_work({"family": "resnet", "depth": 10})["parameters"] > 0   # defaults filled


def test_roofline_achieved_flops_and_fraction_of_peak():
    df = load_results(run_doc([result(batch=2, samples_per_s=1000),
                               result(batch=1, samples_per_s=500, device="cuda"),
                               result(model_spec={"kind": "file", "path": "x.onnx"})]))
    roof = roofline(df, peak_flops={"cpu": 80_000.0}, peak_bandwidth={"cpu": 1000.0})
    assert len(roof) == 2                                     # the file model is left out
    cpu = roof[roof["device"] == "cpu"].iloc[0]
    assert cpu["achieved_flops"] == 40 * 1000
    assert cpu["fraction_of_peak"] == pytest.approx(0.5)
    assert cpu["weight_bytes"] == 26 * 4
    assert cpu["arithmetic_intensity"] == pytest.approx(80 / 104)
    assert cpu["attainable_flops"] == pytest.approx(min(80_000, 80 / 104 * 1000))
    gpu = roof[roof["device"] == "cuda"].iloc[0]
    assert math.isnan(gpu["peak_flops"]) and math.isnan(gpu["fraction_of_peak"])


def test_a_frame_works_with_plain_pandas():
    df = load_results(run_doc([result(runtime=rt, batch=b, p99=b * 2.0 + (rt == "torch"))
                               for rt in ("torch", "onnxruntime") for b in (1, 8)]))
    table = df.pivot_table(index="batch_size", columns="runtime", values="p99_ms")
    assert isinstance(table, pd.DataFrame) and table.loc[8, "torch"] == 17.0
