"""Run files: old and new files read; a journal keeps results of an interrupted session."""

import json

import pytest

from conftest import FAST
from pytest_inferbench.results.runfile import RunFileError, load_run


def test_reads_older_and_newer_files(tmp_path):
    old = {"format": "pytest-inferbench-run", "version": 1, "provenance": {},
           "results": [{"id": "a", "status": "skipped", "reason": "no GPU"}]}
    new = {"format": "pytest-inferbench-run", "version": 3, "provenance": {"gpu": "H100"},
           "results": [{"id": "b", "status": "passed", "energy_j": 1.5,
                        "latency_ms": {"n": 10, "mean": 1.0, "future_stat": 2,
                                       "percentiles": {"p50": {"value": 1.0, "lower": 0.9,
                                                               "upper": 1.1, "extra": 0}}}}]}
    for name, doc in (("old.json", old), ("new.json", new)):
        (tmp_path / name).write_text(json.dumps(doc))
    (a,) = load_run(tmp_path / "old.json")["results"]
    assert a.status == "skipped" and a.latency_ms.n == 0 and a.throughput.queries_per_s is None
    (b,) = load_run(tmp_path / "new.json")["results"]
    assert b.latency.p50 == 1.0
    # keys a newer version added are set aside by name, not lost (results/upgrade.py)
    assert b.unknown_fields == {"energy_j": 1.5, "latency_ms.future_stat": 2,
                                "latency_ms.percentiles.p50.extra": 0}


def test_rejects_what_is_not_a_run_file(tmp_path):
    (tmp_path / "x.json").write_text('{"results": []}')
    with pytest.raises(RunFileError, match="not a pytest-inferbench run file"):
        load_run(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"format": ')
    with pytest.raises(RunFileError, match="y.json:1: not valid JSON"):
        load_run(tmp_path / "y.json")


def test_results_are_journaled_as_they_arrive(pytester):
    """A session killed mid-way leaves a journal with every result measured before it."""
    pytester.makefile(".yaml", bench_j=f"""
        name: j
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: mlp-tiny, runtime: [torch, onnxruntime]}}
        """)
    pytester.makeconftest("""
        import os, glob
        def pytest_runtest_logreport(report):
            # after the second cell's result is in, die without any cleanup
            if report.when == "teardown" and "onnxruntime" in report.nodeid:
                os._exit(3)
        """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 3
    journals = list((pytester.path / ".inferbench" / "runs").glob("*.partial.jsonl"))
    assert len(journals) == 1
    doc = load_run(journals[0])
    assert doc["partial"] and doc["provenance"]["host"]
    assert sorted(r.status for r in doc["results"]) == ["passed", "passed"]
