"""One judgement of a run against its history: the `history` command and the session's gate
(`--infer-baseline history`) give the same verdicts, cell by cell, on the same SQLite store.

The store is filled with run files (imported, as `store import` does) whose cells have known
histories: steady, a 40% slowdown in the newest run, a 10% slowdown under a cell gate of
+20%, a step that became the new level five runs ago, and a cell with too few runs."""

import json
import math

import numpy as np
import pytest

from pytest_inferbench.__main__ import main as cli
from pytest_inferbench.gate.session import SessionGate
from pytest_inferbench.store.db import ResultStore

RUNS = 13


def _result(cell: str, p50: float, gate=None) -> dict:
    lat = {"n": 2000, "mean": p50, "std": 0.05 * p50, "confidence": 0.95,
           "percentiles": {"p50": {"value": p50, "lower": p50 * 0.995, "upper": p50 * 1.005}}}
    return {"id": f"bench_h.yaml::{cell}", "status": "passed", "valid": True,
            "latency_ms": lat, "throughput": {"samples_per_s": 1000.0 / p50},
            "cell": {"id": cell, "spec": "bench_h.yaml", "model": {"family": "mlp", "name": cell},
                     "runtime": "torch", "device": "cpu", "batch_size": 1, "gate": gate}}


def _run(k: int, rng) -> dict:
    """Run k of RUNS (0-based): each cell's p50 at its level, 1% run-to-run noise."""
    newest = k == RUNS - 1

    def noisy(level):
        return float(level * math.exp(rng.normal(0.0, 0.01)))
    results = [_result("steady", noisy(2.0)),
               _result("slower", noisy(1.4 if newest else 1.0)),
               _result("mild", noisy(1.1 if newest else 1.0), gate={"p50": "+20%"}),
               _result("stepped", noisy(1.3 if k >= 7 else 1.0), gate={"p50": "+10%"})]
    if k >= RUNS - 3:
        results.append(_result("young", noisy(1.0)))
    start = f"2026-03-{k + 1:02d}T00:00:00+00:00"
    return {"format": "pytest-inferbench-run", "version": 1, "name": f"night-{k}",
            "provenance": {"start_time": start, "host": "h", "cpu_model": "Test CPU",
                           "cpu_count_logical": 2, "python": "3.11.2",
                           "versions": {"torch": "2.13.0"},
                           "git": {"branch": "main", "commit": f"c{k:02d}".ljust(40, "0")}},
            "results": results}


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(5)
    docs = [_run(k, rng) for k in range(RUNS)]
    url = f"sqlite:///{tmp_path / 'results.db'}"
    db = ResultStore.open(url)
    try:
        for doc in docs:
            assert db.record(doc).added
    finally:
        db.close()
    return url, docs[-1]


def _command(url, tmp_path, capsys):
    out = tmp_path / "series.json"
    status = cli(["history", "--store", url, "--json", str(out)])
    return status, capsys.readouterr().out, json.loads(out.read_text())


def _gate(url, newest_doc):
    return SessionGate(baseline_ref="history", store_url=url).compare(newest_doc)


def test_the_command_and_the_session_gate_agree_cell_by_cell(store, tmp_path, capsys):
    url, newest_doc = store
    status, text, listing = _command(url, tmp_path, capsys)
    comparison = _gate(url, newest_doc)
    gate_entries = {e["cell"]: e for e in comparison["verdicts"]}
    gate_skipped = {item["cell"]: item["reason"] for item in comparison["not_measured"]}
    command = {s["cell"]: s["newest"] for s in listing}
    assert set(command) == set(gate_entries) | set(gate_skipped)
    for cell, mine in command.items():
        if cell in gate_skipped:
            assert mine["verdict"] is None and mine["reason"] == gate_skipped[cell], cell
            continue
        theirs = gate_entries[cell]
        assert (mine["mode"], mine["verdict"]) == (theirs["mode"], theirs["verdict"]), cell
        assert mine["metrics"] == theirs["metrics"], cell     # ratio, interval, reason, ...

    verdict = {cell: e["verdict"] for cell, e in gate_entries.items()}
    assert verdict == {"bench_h.yaml::steady": "no change",
                       "bench_h.yaml::slower": "regression",
                       "bench_h.yaml::mild": "no change",          # +10% under its +20% gate
                       "bench_h.yaml::stepped": "no change"}       # the step is the new level
    assert "history mode needs at least 5" in gate_skipped["bench_h.yaml::young"]
    (stepped,) = gate_entries["bench_h.yaml::stepped"]["metrics"]
    assert stepped["history_runs"] == 5 and len(stepped["changes"]) == 1
    # the metrics judged are each cell's gate's: the spec's, else the default
    assert [m["metric"] for m in gate_entries["bench_h.yaml::mild"]["metrics"]] == ["p50"]
    assert [m["metric"] for m in gate_entries["bench_h.yaml::steady"]["metrics"]] == \
        ["p50", "throughput"]

    assert comparison["failed"] and status == 1
    assert "bench_h.yaml::slower  [Test CPU x2, no GPU, torch 2.13.0, python 3.11]" in text
    assert "newest run: p50 REGRESSION: p50 +3" in text
    assert "1 cell: the newest run starts a regression" in text
    # mild's newest run is a change point (+11%), listed, but judged by the cell's gate
    assert "  p50: REGRESSION at run 13 (2026-03-13, commits c110000000..c120000000)" in text
    assert "newest run: p50 no change: p50 +11.6% [" in text


def test_a_cell_filter_shows_fewer_cells_with_the_same_verdicts(store, tmp_path, capsys):
    url, _ = store
    _, _, everything = _command(url, tmp_path, capsys)
    status = cli(["history", "--store", url, "--cell", "mild", "--json",
                  str(tmp_path / "mild.json")])
    (mild,) = json.loads((tmp_path / "mild.json").read_text())
    assert status == 0 and mild["cell"] == "bench_h.yaml::mild"
    assert mild["newest"] == next(s["newest"] for s in everything if s["cell"] == mild["cell"])
