"""Timing accuracy against a system under test with a known service time."""

import time

import pytest

from pytest_inferbench.workload.engine import measure_callable
from pytest_inferbench.spec import Settings


def busy_wait(seconds):
    clock = time.perf_counter
    def call():
        end = clock() + seconds
        while clock() < end:
            pass
    return call


@pytest.mark.parametrize("service_ms", [0.2, 2.0])
@pytest.mark.parametrize("scenario", ["single_stream", "offline"])
def test_median_matches_known_service_time(service_ms, scenario):
    settings = Settings(warmup=10, min_duration=0.3, max_duration=1.0, min_queries=50,
                        ci_width=0.01)
    result = measure_callable(busy_wait(service_ms / 1e3), settings, scenario, batch_size=4)
    p50 = result.latency.p50
    # A busy wait ends at its wall-clock deadline however often it is preempted, so the timer
    # can only add: p50 / service was 1.0014 to 1.0060 in 5 runs of all four cases on this
    # shared 2-core host at load ~2.4 (see the commit). One-sided, with 5x the worst as margin.
    assert result.latency.min >= service_ms * 0.999
    assert service_ms <= p50 <= service_ms * 1.03, p50
    # back to back, the busy window is the sum of the latencies: no time lost between queries
    # (compared with the mean, not the service time: a preempted query is real time too).
    # qps x mean was 0.9986 to 0.9996 in the same 5 runs (the loop's own time between
    # queries); margin 1%, 7x the worst.
    assert result.throughput.queries_per_s * result.latency.mean / 1e3 == pytest.approx(
        1.0, abs=0.01)
    assert result.throughput.samples_per_s == pytest.approx(4 * result.throughput.queries_per_s)


def test_stop_rules_are_recorded():
    fast = busy_wait(0.0001)
    # max_queries stops before min_duration: with min_duration 0.05 s a loaded machine's
    # stall once let the interval rule stop at 263 queries first
    capped = measure_callable(fast, Settings(warmup=0, min_duration=5, max_duration=10,
                                             min_queries=1, max_queries=300), "offline")
    assert capped.latency.n == 300 and capped.stop.reason == "max_queries"
    import random
    jitter = random.Random(0)

    def noisy():  # distinct service times, so no interval collapses to zero width
        busy_wait(jitter.uniform(5e-5, 1.5e-4))()
    timed = measure_callable(noisy, Settings(warmup=0, min_duration=0.1, max_duration=0.2,
                                            min_queries=1, ci_width=1e-9), "offline")
    assert timed.stop.reason == "max_duration"
    assert 0.19 <= timed.duration_s <= 0.4
    converged = measure_callable(busy_wait(0.001), Settings(warmup=0, min_duration=0.1,
                                                            max_duration=5, min_queries=50,
                                                            ci_width=0.05), "single_stream")
    assert converged.stop.reason == "ci_converged"
    assert converged.stop.ci_half_width_rel <= 0.05
    assert converged.stop.target_percentile == 90


def test_warmup_is_excluded():
    calls = []
    def slow_first():
        calls.append(1)
        time.sleep(0.05 if len(calls) <= 5 else 0)
    result = measure_callable(slow_first, Settings(warmup=5, min_duration=0.05, max_duration=0.2,
                                                   min_queries=10), "single_stream")
    assert result.warmup["queries"] == 5
    assert result.latency.max < 40      # ms: none of the five slow calls was measured
