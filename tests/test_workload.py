"""Load generation: arrivals, open loop without coordinated omission, concurrency, SLO verdicts."""

import json
import threading
import time

import numpy as np
import pytest

from conftest import FAST
from pytest_inferbench.core.errors import SpecError
from pytest_inferbench.core.early_stopping import min_passing_queries, verdict
from pytest_inferbench.workload.engine import measure_callable
from pytest_inferbench.spec import Settings, Workload, load_spec
from pytest_inferbench.workload.arrivals import load_trace, schedule


# ------------------------------------------------------------------ arrivals

def test_constant_and_poisson_rates():
    c = schedule("constant", 100, 10)
    assert len(c) == 1000 and np.all(np.diff(c) == 10_000_000)
    p = schedule("poisson", 1000, 20, seed=3)
    gaps = np.diff(p) / 1e9
    assert len(p) == pytest.approx(20_000, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)     # exponential: CV 1
    assert np.array_equal(p, schedule("poisson", 1000, 20, seed=3))     # seeded


@pytest.mark.parametrize("k", [0.25, 1.0, 4.0])
def test_gamma_burstiness_is_the_shape(k):
    gaps = np.diff(schedule("gamma", 1000, 30, seed=1, burstiness=k)) / 1e9
    assert gaps.mean() == pytest.approx(1e-3, rel=0.05)
    assert (gaps.std() / gaps.mean()) ** 2 == pytest.approx(1 / k, rel=0.1)   # CV^2 = 1/shape


def test_onoff_is_silent_while_off():
    t = schedule("onoff", 500, 10, seed=0, on_s=1.0, off_s=1.5) / 1e9
    phase = t % 2.5
    assert np.all(phase < 1.0) and len(t) == pytest.approx(4 * 500, rel=0.1)


def test_trace_replay_and_its_errors(tmp_path):
    f = tmp_path / "arrivals.csv"
    f.write_text("timestamp\n10.5\n10.0\n11.25\n")
    assert list(load_trace(f)) == [0, 500_000_000, 1_250_000_000]
    f.write_text("t\n1.0\nsoon\n")
    with pytest.raises(ValueError, match="arrivals.csv:3: expected a timestamp"):
        load_trace(f)


# ------------------------------------------------------------------ early stopping

def test_early_stopping_matches_loadgen_query_counts():
    # MLPerf LoadGen: p99 at 99% confidence needs 459 queries with none over the bound and
    # 662 in all with one over (661 within + 1 over)
    assert min_passing_queries(0, 0.99, 0.99) == 459
    assert min_passing_queries(1, 0.99, 0.99) + 1 == 662
    assert min_passing_queries(2, 0.99, 0.99) + 2 == 838


def test_verdicts():
    ms = 1_000_000
    assert verdict(np.full(500, 1 * ms), 5 * ms, 99)["verdict"] == "pass"
    few = verdict(np.full(100, 1 * ms), 5 * ms, 99)
    assert few["verdict"] == "undetermined" and few["queries_needed"] == 459
    bad = verdict(np.r_[np.full(900, ms), np.full(100, 9 * ms)], 5 * ms, 99)
    assert bad["verdict"] == "fail" and bad["overlatency"] == 100


# ------------------------------------------------------------------ open loop

def sleep_sut(seconds):
    return lambda: time.sleep(seconds)


def run_server(fn, rate, seconds=2.0, arrival="constant", max_error_rate=0.0, **workload):
    settings = Settings(warmup=0, min_duration=seconds, max_duration=seconds, min_queries=1,
                        ci_width=1e-12, max_error_rate=max_error_rate)
    return measure_callable(fn, settings, Workload(scenario="server", arrival=arrival,
                                                   rate=rate, **workload))


def test_achieved_rate_matches_target():
    r = run_server(sleep_sut(0.0005), 400)
    assert r.load["achieved_rate"] == pytest.approx(400, rel=0.01)
    assert r.load["errors"] == 0 and r.errors["attempted"] == r.load["issued"]
    assert r.valid == (not r.load["invalid_reasons"])
    p = run_server(sleep_sut(0.0005), 400, arrival="poisson")
    assert p.load["achieved_rate"] == pytest.approx(p.load["scheduled_rate"], rel=0.01)


def test_validity_is_judged_by_the_effect_of_the_lag():
    """Late sends make latency worse, not better: a run is invalid only when the lag is a
    material share of the latency reported, or the rate sent departs from the schedule."""
    from pytest_inferbench.workload.failures import ErrorLog
    from pytest_inferbench.workload.open_loop import _samples
    ms = 1_000_000
    sched = np.arange(1000, dtype=np.int64) * 10 * ms               # 100/s for 10 s
    ok = np.ones(1000, dtype=bool)

    def judge(lag_ns, service_ns, stalls=None):
        sent = sched + lag_ns
        return _samples(sched, sent, sent + service_ns, ok, 0, sched[-1] + ms, "schedule_end",
                        99, ErrorLog(), 0.001, 0.95, stalls=stalls).extra
    # 3% of sends 2 ms late, against 100 ms latencies: late sends counted, the run is valid
    lag = np.where(np.arange(1000) % 33 == 0, 2 * ms, 50_000)
    e = judge(lag, np.full(1000, 100 * ms))
    assert e["late_fraction"] > 0.01 and e["valid"] and e["invalid_reasons"] == []
    assert e["lag_effect"] == pytest.approx(0.02, abs=0.001)      # p99 102 ms against 100
    # the same lag against 5 ms latencies moves p99 from 5 to 7 ms: invalid, and says why
    e = judge(lag, np.full(1000, 5 * ms))
    assert not e["valid"] and "moved latency p99 from 5 to 7 ms (+40.0%" in e["invalid_reasons"][0]
    # ... where the issuer saw itself stalled over each late send's due time: the host
    late = sched[np.arange(1000) % 33 == 0]
    e = judge(lag, np.full(1000, 5 * ms), stalls=[(t - ms // 10, t + 19 * ms // 10) for t in late])
    assert e["issuer_stalls"]["late_in_stalls"] == e["issuer_stalls"]["late_sends"] == 31
    assert e["invalid_reasons"][0].endswith("(stalls up to 2 ms: the host, a thread holding the "
                                            "GIL, or a write the socket blocked); re-run on a "
                                            "quieter host")
    # ... stalls elsewhere (each ended before the send it precedes was due): its own work
    e = judge(lag, np.full(1000, 5 * ms), stalls=[(t - 3 * ms, t - ms) for t in late])
    assert e["issuer_stalls"]["late_in_stalls"] == 0
    assert "31 of the 31 sends over 0.25 ms late were made late by the client's own work " \
        "(0 by stalls of the host)" in e["invalid_reasons"][0]
    # a generator that drifts behind its schedule (5% slower): invalid for the rate
    e = judge((np.arange(1000) * 0.5 * ms).astype(np.int64), np.full(1000, 9000 * ms))
    assert not e["valid"] and "against a schedule of 100.0/s" in e["invalid_reasons"][-1]


def test_stall_shows_in_p99_no_coordinated_omission():
    """A server that pauses 200 ms once a second: every query sent during the pause waits, and
    latency from the scheduled send charges all of them (a closed loop would see one)."""
    t0 = time.perf_counter()
    state = {"second": 0}

    def stalling():
        second = int(time.perf_counter() - t0)
        if second > state["second"]:
            state["second"] = second
            time.sleep(0.2)
        else:
            time.sleep(0.0005)
    r = run_server(stalling, 200, seconds=3.0, slo={"p99": "50ms"})
    # ~2 stalls of 200 ms at 200/s: ~80 of ~600 queries wait 0-200 ms behind one
    assert r.latency.p99 > 100 and r.latency.p50 < 5
    assert r.slo["verdict"] == "fail" and r.slo["overlatency"] > 20
    assert r.load["achieved_rate"] == pytest.approx(200, rel=0.01)   # the generator kept on


def test_errors_and_a_hanging_system_end_the_run():
    calls = {"n": 0}
    release = threading.Event()

    def flaky():
        calls["n"] += 1
        if calls["n"] % 10 == 0:
            raise RuntimeError("HTTP 500")
        if calls["n"] > 150:
            release.wait(5)          # hangs: the run must still end at the timeout
        time.sleep(0.0002)
    t = time.perf_counter()
    r = run_server(flaky, 200, seconds=1.0, timeout="0.5s", max_error_rate=0.05)
    release.set()
    assert time.perf_counter() - t < 4
    assert r.load["errors"] >= 10 and r.load["timeouts"] > 0
    assert r.latency.n == r.load["completed"]
    assert r.errors["kinds"][0]["type"] == "RuntimeError"
    assert r.errors["kinds"][0]["message"] == "HTTP 500"
    assert r.errors["errors"] == r.load["errors"] and r.errors["timeouts"] == r.load["timeouts"]
    # 10% errors and the hung queries: over the 5% allowed, so the result says failed, and why
    assert r.status == "failed" and "RuntimeError: HTTP 500" in r.reason


def test_concurrency_scenario_throughput():
    settings = Settings(warmup=0, min_duration=1, max_duration=1, min_queries=1, ci_width=1e-12)
    r = measure_callable(sleep_sut(0.002), settings, Workload(scenario="concurrency",
                                                              concurrency=4))
    # four clients, 2 ms each, sleeping releases the GIL: about 4 / 2 ms
    assert r.throughput.queries_per_s == pytest.approx(2000, rel=0.15)
    assert r.load["concurrency"] == 4 and r.latency.p50 == pytest.approx(2.0, rel=0.15)


# ------------------------------------------------------------------ spec and plugin

@pytest.mark.parametrize("workload,needle", [
    ("{scenario: server}", "needs a `rate`"),
    ("{scenario: offline, rate: 10}", "`rate` does not apply to the offline scenario"),
    ("{scenario: concurrency}", "needs `concurrency`"),
    ("{scenario: server, rate: 10, slo: {p101: 5ms}}", "should name a percentile"),
    ("{scenario: server, arrival: trace, trace: missing.csv}", "trace file not found"),
    ("{scenario: server, arrival: poison, rate: 5}", "did you mean 'poisson'"),
    ("{scenario: capacity, rate: 5}", "needs an `slo`"),
    ("{scenario: ramp, rate: 5}", "needs `rate` (start) and `step`"),
])
def test_workload_errors(tmp_path, workload, needle):
    f = tmp_path / "bench_w.yaml"
    f.write_text(f"name: w\nbenchmarks:\n  - model: mlp-tiny\n    workload: {workload}\n")
    with pytest.raises(SpecError, match="bench_w.yaml:4") as info:
        load_spec(f)
    assert needle in info.value.render()


def test_server_cells_from_yaml(pytester):
    pytester.makefile(".yaml", bench_srv=f"""
        name: srv
        defaults: {{{FAST}}}
        benchmarks:
          - model: mlp-tiny
            runtime: onnxruntime
            workload: {{scenario: server, arrival: poisson, rate: [100, 200], slo: {{p99: 50ms}}}}
          - model: mlp-tiny
            workload: {{scenario: concurrency, concurrency: 2}}
            serving: {{system: inprocess, instances: 2}}
        """)
    result = pytester.runpytest("--infer-json", "run.json", "--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "*mlp-tiny[[]onnxruntime-cpu-fp32-bs1-server-poisson100[]]",
        "*mlp-tiny[[]onnxruntime-cpu-fp32-bs1-server-poisson200[]]",
        "*mlp-tiny[[]onnxruntime-cpu-fp32-bs1-concurrency2-inprocessx2[]]"])
    result = pytester.runpytest("--infer-json", "run.json")
    result.assert_outcomes(passed=3)
    doc = json.loads((pytester.path / "run.json").read_text())
    server = [r for r in doc["results"] if "server" in r["id"]]
    for r in server:
        assert r["load"]["target_rate"] in (100, 200) and r["load"]["issued"] > 0
        assert r["slo"]["verdict"] in ("pass", "undetermined") and r["slo"]["bound_ms"] == 50
        # valid unless the generator's lag is a material share of the latency (on 2 busy
        # cores that can happen: it is then reported with the reason, not hidden)
        assert r["valid"] == (not r["load"]["invalid_reasons"])
