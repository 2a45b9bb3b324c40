"""The scenario registry (core/scenarios/) and the one engine (workload/engine.py,
workload/stopping.py): every scenario is declared once and found through the table, a new
scenario is a module and a registration, and every generator stops by the same rule."""

import ast
import importlib
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pytest_inferbench.core import scenarios
from pytest_inferbench.core.scenarios import SCENARIOS, Scenario
from pytest_inferbench.spec import Settings, Workload
from pytest_inferbench.workload import engine
from pytest_inferbench.workload.failures import ErrorLog
from pytest_inferbench.workload.samples import Samples
from pytest_inferbench.workload.stopping import StoppingRule

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_inferbench"

WORKLOADS = {   # a workload of each scenario, and the id part it has had since before the registry
    "offline": ({}, "offline"),
    "single_stream": ({}, "single_stream"),
    "server": ({"rate": 100, "arrival": "gamma", "burstiness": 0.5}, "server-gamma100b0.5"),
    "concurrency": ({"concurrency": 4}, "concurrency4"),
    "ramp": ({"rate": 10, "step": 5}, "ramp10+5"),
    "capacity": ({"slo": {"p99": "50ms"}, "rate": 20}, "capacity-p99-50ms"),
}


def test_every_scenario_is_registered_with_a_generator_the_engine_finds():
    assert set(SCENARIOS) == set(WORKLOADS)
    for name, (fields, label) in WORKLOADS.items():
        workload = Workload(scenario=name, **fields)
        assert workload.label() == label
        assert callable(engine.generator(workload))
        kind = SCENARIOS[name]
        if kind.generative:      # its OpenAI-streams generator exists too
            module, _, fn = kind.generative.partition(":")
            assert callable(getattr(importlib.import_module(module), fn))


@pytest.mark.parametrize("fields,message", [
    ({"scenario": "server"}, "needs a `rate`"),
    ({"scenario": "concurrency"}, "needs `concurrency`"),
    ({"scenario": "ramp", "rate": 5}, "needs `rate` (start) and `step`"),
    ({"scenario": "capacity", "rate": 5}, "needs an `slo`"),
    ({"scenario": "offline", "rate": 5}, "`rate` does not apply to the offline scenario"),
])
def test_the_registry_says_what_a_workload_lacks(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Workload(**fields)


def double_tap(sut, settings, workload, target, progress):
    """A scenario nobody wrote into the engine: two calls per query, back to back."""
    import time
    starts, ends = [], []
    for _ in range(50):
        t0 = time.perf_counter_ns()
        sut.call()
        sut.call()
        starts.append(t0)
        ends.append(time.perf_counter_ns())
    s, e = np.array(starts), np.array(ends)
    return Samples(starts_ns=s, ends_ns=e, busy_ns=int(e[-1] - s[0]), wall_ns=int(e[-1] - s[0]),
                   stop_reason="max_queries", target_percentile=target,
                   ci_half_width_rel=0.01)


def test_a_new_scenario_is_one_module_and_one_registration(monkeypatch):
    kind = Scenario(name="double_tap", summary="two calls a query", target=75.0,
                    generator=f"{__name__}:double_tap")
    monkeypatch.setitem(SCENARIOS, "double_tap", kind)
    calls = []
    result = engine.measure_callable(lambda: calls.append(1), Settings(warmup=3),
                                     Workload.model_construct(scenario="double_tap"))
    assert len(calls) == 3 + 100          # the engine's warm-up, then the scenario's queries
    assert result.scenario == "double_tap" and result.latency_ms.n == 50
    assert result.stop.target_percentile == 75.0       # its declared default target
    assert result.stop.reason == "max_queries" and result.warmup["queries"] == 3


def _compares_of_scenario_names() -> list[str]:
    names = set(SCENARIOS)

    def named(node):
        if isinstance(node, ast.Constant):
            return node.value in names
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(
            isinstance(e, ast.Constant) and e.value in names for e in node.elts)
    hits = []
    for path in PACKAGE.rglob("*.py"):
        if "otava" in path.parts or "scenarios" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Compare) and (named(node.left) or any(
                    named(c) for c in node.comparators)):
                source = ast.get_source_segment(text, node) or ""
                if "objective" not in source:    # "capacity" is also an objective's name
                    hits.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {source}")
    return hits


def test_scenario_names_are_compared_in_at_most_six_places_outside_the_registry():
    hits = _compares_of_scenario_names()
    assert len(hits) <= 6, "\n".join(hits)


# ------------------------------------------------------------------ the stopping rule

def _settings(**kw):
    return Settings(**{"warmup": 0, "min_duration": 1.0, "max_duration": 5.0,
                       "min_queries": 10, **kw})


def test_the_rule_never_stops_before_min_duration_and_min_queries():
    rule = StoppingRule(_settings(), target=50.0)
    steady = np.full(1000, 1_000_000, dtype=np.int64)
    assert rule.check(int(0.5e9), steady, ErrorLog()) is None          # too early
    assert rule.check(int(1.5e9), steady[:5], ErrorLog()) is None       # too few
    assert rule.check(int(1.5e9), steady, ErrorLog()) == "ci_converged"
    spread = np.random.default_rng(0).lognormal(0, 2, 40).astype(np.int64) + 1
    assert rule.check(int(1.5e9), spread, ErrorLog()) is None           # interval still wide


def test_the_rule_stops_at_its_limits_and_on_errors_first():
    rule = StoppingRule(_settings(max_queries=100), target=50.0)
    assert rule.limit(int(1e9), 100) == "max_queries"
    assert rule.limit(int(5e9), 3) == "max_duration"
    assert rule.limit(int(1e9), 3) is None
    errors = ErrorLog()
    errors.record(RuntimeError("boom"))
    # an error budget of 0 is exceeded by one failure, before anything else is asked
    assert rule.check(0, np.zeros(0, dtype=np.int64), errors) == "errors"


def test_a_verdict_replaces_the_interval_rule_after_the_minimum():
    seen = []

    def decide(lat, waiting):
        seen.append(len(waiting))
        return len(lat) >= 3
    rule = StoppingRule(_settings(), target=99.0, min_s=0.2, decide=decide)
    lat = np.ones(3, dtype=np.int64)
    assert rule.check(int(0.1e9), lat, ErrorLog(), np.ones(7)) is None     # before min_s
    assert rule.check(int(0.3e9), lat, ErrorLog(), np.ones(7)) == "verdict"
    assert seen == [7]


@pytest.mark.parametrize("scenario", ["offline", "concurrency", "server"])
def test_every_generator_stops_by_the_rule(scenario, monkeypatch):
    """The engine's generators ask the one rule: a rule that always stops ends each of them
    at its first look with the rule's own reason."""
    looks = []

    def stop_now(self, elapsed_ns, lat_ns, errors, *evidence):
        looks.append(scenario)
        return "ci_converged"
    monkeypatch.setattr(StoppingRule, "check", stop_now)
    fields = {"concurrency": 2} if scenario == "concurrency" else \
        {"rate": 200} if scenario == "server" else {}
    result = engine.measure_callable(lambda: None, _settings(min_duration=0.3),
                                     Workload(scenario=scenario, **fields))
    assert looks and result.stop.reason == "ci_converged"
    assert result.wall_s < 2.0


def test_the_window_covers_the_measured_queries_only():
    import gc
    inside = []

    def query():
        inside.append(gc.isenabled())
    result = engine.measure_callable(query, _settings(warmup=5, min_duration=0.2,
                                                      max_duration=0.3),
                                     Workload(scenario="offline"))
    assert inside[:5] == [True] * 5              # the warm-up is outside the window
    assert not any(inside[5:]) and gc.isenabled()  # no collection inside it, restored after
    assert result.window["start"] < result.window["end"]
    assert result.process                         # the monitor covered the window
