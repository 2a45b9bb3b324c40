"""The typed, versioned result: sections reject unknown keys, version-1 run files (real ones,
written by the code before the Result was typed: tests/data/runfiles/v1, made from the specs in
tests/data/runfiles/specs) read through one upgrade step, and the printed JSON Schema
describes what a session writes."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import FAST
from pytest_inferbench.__main__ import main as cli
from pytest_inferbench.core.result import Result
from pytest_inferbench.core.sections import Load
from pytest_inferbench.results.runfile import RunFile, RunFileError, load_run, parse_run
from pytest_inferbench.results.upgrade import upgrade, upgrade_v1
from pytest_inferbench.store.db import ResultStore

DATA = Path(__file__).parent / "data" / "runfiles"
V1 = sorted((DATA / "v1").glob("*.json"))
NAMES = [p.stem for p in V1]


def test_the_version_1_data_is_what_it_should_cover():
    assert NAMES == ["inprocess", "load", "served"]
    results = [r for p in V1 for r in json.loads(p.read_text())["results"]]
    assert {json.loads(p.read_text())["version"] for p in V1} == {1}
    scenarios = {r["scenario"] for r in results}
    assert {"offline", "single_stream", "server", "concurrency", "ramp"} <= scenarios
    assert any(r["status"] == "failed" for r in results)
    assert any(r["slo"] and r["load"] and r["load"].get("send_lag_ms") for r in results)
    assert any(r["serving"] for r in results)


@pytest.mark.parametrize("name", NAMES)
def test_a_version_1_file_reads_as_version_2(name):
    raw = json.loads((DATA / "v1" / f"{name}.json").read_text())
    doc = load_run(DATA / "v1" / f"{name}.json")
    assert doc["version"] == 2 and doc["provenance"] == raw["provenance"]
    assert len(doc["results"]) == len(raw["results"])
    for r, old in zip(doc["results"], raw["results"]):
        assert isinstance(r, Result) and r.id == old["id"] and r.status == old["status"]
        assert r.latency_ms.n == old["latency_ms"]["n"]
        if old["load"]:          # typed: the figures are attributes now
            assert r.load.achieved_rate == old["load"].get("achieved_rate")
            assert r.load.valid == old["load"].get("valid", True)
        if old["slo"]:
            assert r.slo.verdict == old["slo"]["verdict"]
            assert r.slo.bound_ms == old["slo"]["bound_ms"]
        if old["serving"]:
            assert r.serving.system == old["serving"]["system"]
        assert r.process.peak_rss_mb == old["process"].get("peak_rss_mb")


@pytest.mark.parametrize("name", NAMES)
def test_a_version_1_file_compares_with_a_version_2_file(name, tmp_path, capsys):
    old, new = DATA / "v1" / f"{name}.json", DATA / "v2" / f"{name}.json"
    assert json.loads(new.read_text())["version"] == 2
    out = tmp_path / "comparison.json"
    assert cli(["compare", str(old), str(new), "--json", str(out)]) in (0, 1)
    text = capsys.readouterr().out
    comparison = json.loads(out.read_text())
    measured = [r for r in json.loads(old.read_text())["results"] if r["latency_ms"]["n"]]
    # the same spec measured twice: every measured cell is matched, none is one-sided
    assert len(comparison["verdicts"]) == len(measured) > 0
    assert comparison["only_in_baseline"] == comparison["only_in_new"] == []
    assert all(v["cell"] in text for v in comparison["verdicts"])


def test_load_results_and_the_report_read_version_1_files(tmp_path, capsys):
    from pytest_inferbench import load_results      # lazy: pandas
    df = load_results([DATA / "v1", DATA / "v2" / "served.json"])
    total = sum(len(json.loads(p.read_text())["results"]) for p in V1)
    assert len(df) == total + 3
    served = df[(df["scenario"] == "server") & (df["n"] > 0)]
    assert set(served["slo_verdict"]) <= {"pass", "fail", "undetermined"} and len(served) == 4
    assert served["achieved_rate"].notna().all() and served["send_lag_p99_ms"].notna().all()
    out = tmp_path / "r.html"
    assert cli(["report", str(DATA / "v1"), str(DATA / "v2" / "served.json"),
                "-o", str(out)]) == 0
    html = out.read_text()
    assert "mlp-small" in html and "onnxruntime-cpu-fp32-bs1-server-poisson100-http" in html


def test_store_import_of_a_version_1_file(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert cli(["store", "import", str(DATA / "v1" / "served.json"), "--store", url]) == 0
    assert "1 run added (3 results)" in capsys.readouterr().out
    store = ResultStore.open(url)
    try:
        (doc,) = store.documents()
    finally:
        store.close()
    assert doc["version"] == 2          # recorded after the upgrade
    run = parse_run(doc)
    assert [r.status for r in run.results] == ["passed", "passed", "failed"]
    assert run.results[0].slo.verdict in ("pass", "fail", "undetermined")


def test_upgrade_keeps_what_version_2_does_not_declare():
    doc = {"format": "pytest-inferbench-run", "version": 1, "provenance": {}, "extra_top": 1,
           "results": [{"id": "a", "old_field": 7,
                        "load": {"achieved_rate": 10.0, "gone": True,
                                 "max_rate": {"value": 180, "upper": 190},
                                 "steps": [{"rate": 5.0, "old_step_key": 1}]},
                        "latency_ms": {"n": 3, "histogram": {"edges_ms": "bad",
                                                             "counts": [3]}}}]}
    up = upgrade_v1(doc)
    assert up["version"] == 2 and doc["version"] == 1      # a new document
    assert up["unknown_fields"] == {"extra_top": 1}
    (r,) = RunFile.model_validate(up).results
    assert r.load.achieved_rate == 10.0 and r.load.max_rate == 180
    assert r.unknown_fields == {"old_field": 7, "load.gone": True,
                                "load.max_rate": {"value": 180, "upper": 190},
                                "load.steps.0.old_step_key": 1,
                                # what the model cannot read, then what that left unreadable
                                "latency_ms.histogram.edges_ms": "bad",
                                "latency_ms.histogram": {"counts": [3]}}
    v2 = {"format": "pytest-inferbench-run", "version": 2, "results": []}
    assert upgrade(v2) is v2


def test_a_version_2_file_with_an_unknown_key_is_refused(tmp_path):
    doc = json.loads((DATA / "v2" / "inprocess.json").read_text())
    doc["results"][0]["load"] = {"achieved_rate": 1.0, "acheived_rate": 1.0}    # misspelt
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(RunFileError, match="bad.json: not a valid version-2 run file.*"
                                           "acheived_rate"):
        load_run(tmp_path / "bad.json")


def test_a_new_result_rejects_unknown_keys():
    with pytest.raises(ValidationError, match="energy_joules"):
        Result(energy_joules=1.0)
    r = Result()
    r.load = {"achieved_rate": 5.0, "valid": False}     # a writer's dict becomes the model
    assert isinstance(r.load, Load) and r.load.achieved_rate == 5.0 and not r.load.valid
    with pytest.raises(ValidationError, match="acheived_rate"):
        r.load = {"acheived_rate": 5.0}
    with pytest.raises(ValidationError, match="queue"):
        r.serving = {"system": "http", "queue": 1}
    r.serving = {"system": "http"}
    r.serving["breakdown_note"] = "none"                 # a declared key, dict-style
    assert r.serving.breakdown_note == "none"
    with pytest.raises(KeyError, match="breakdown_notes"):
        r.serving["breakdown_notes"] = "misspelt"
    with pytest.raises(KeyError):
        r.serving.get("sytem")
    with pytest.raises(TypeError, match="read the attribute"):
        "system" in r.serving       # noqa: B015 - a dict-style test would always be False
    with pytest.raises(ValidationError):
        r.process.peak_rss_mb = "a lot"


def test_the_schema_describes_what_a_session_writes(pytester, capsys):
    assert cli(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    props = schema["properties"]
    assert {"format", "version", "name", "provenance", "results"} <= set(props)
    assert props["version"]["const"] == 2 and schema["additionalProperties"] is False
    assert props["results"]["items"]["$ref"] == "#/$defs/Result"
    result = schema["$defs"]["Result"]
    assert result["additionalProperties"] is False
    assert {"load", "slo", "serving", "errors", "generative", "search"} <= set(
        result["properties"])
    pytester.makefile(".yaml", bench_s=f"""
        name: s
        defaults: {{{FAST}, percentiles: [50, 99]}}
        benchmarks:
          - model: mlp-small
            runtime: onnxruntime
            workload: [offline, {{scenario: server, rate: 200, slo: {{p99: 50ms}}}}]
        """)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-json", "run.json",
                                  "--infer-no-html").assert_outcomes(passed=2)
    written = json.loads((pytester.path / "run.json").read_text())
    assert written["version"] == 2
    run = RunFile.model_validate(written)      # the model the schema is printed from
    assert [r.scenario for r in run.results] == ["offline", "server"]
    assert run.results[1].load.issued > 0 and run.results[1].slo is not None
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.validate(written, schema)
