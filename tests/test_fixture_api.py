"""The `inferbench` fixture: benchmarks written as ordinary tests use the same engine."""

import json

from conftest import FAST  # noqa: F401


def test_fixture_measures_a_callable_and_records_it(pytester):
    pytester.makepyfile(test_user="""
        import time
        import numpy as np
        from pytest_inferbench.runtimes.base import Runner

        def test_busy(inferbench):
            def work():
                end = time.perf_counter() + 0.0005
                while time.perf_counter() < end:
                    pass
            result = inferbench(work, scenario="single_stream", warmup=5, min_duration="0.1s",
                                max_duration="0.5s", min_queries=50)
            assert 0.45 < result.latency.p50 < 0.7
            assert result.latency.percentiles["p99"].value >= result.latency.p50
            assert result.throughput.queries_per_s > 0

        class Doubler:
            name = "doubler"
            def load(self, model, device, precision, context): pass
            def prepare(self, inputs):
                x = inputs["x"]
                return lambda: x * 2
            def synchronize(self): pass
            def close(self): pass
            def info(self): return {"name": self.name}

        def test_runner(inferbench):
            r = inferbench(Doubler(), {"x": np.ones((8, 16), np.float32)}, scenario="offline",
                           batch_size=8, name="doubler", warmup=2, min_duration=0.05,
                           max_duration=0.2, min_queries=10)
            assert r.runtime["name"] == "doubler" and r.batch_size == 8

        def test_bad_setting(inferbench):
            inferbench(lambda: None, min_duration="soon")
        """)
    result = pytester.runpytest("--infer-json", "run.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*ValueError: inferbench: min_duration*duration*"])
    doc = json.loads((pytester.path / "run.json").read_text())
    ids = sorted(r["id"] for r in doc["results"])
    assert ids == ["test_user.py::test_busy", "test_user.py::test_runner::doubler"]
    assert all(r["status"] == "passed" and r["latency_ms"]["n"] >= 10 for r in doc["results"])
