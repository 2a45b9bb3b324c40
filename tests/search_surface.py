"""A controlled system of known response surface for the configuration search (shared by
tests/test_config_search.py and benchmarks/config_search.py).

Per-query service time is a known function of batch size b, instances k (15% contention per
extra instance) and a dynamic batcher's queue delay d (it amortises the per-query overhead,
and every query waits it before service):

    T(b, k, d) = (2 ms x (1 - 0.7 d / (d + 1 ms)) + 0.25 ms x b) x (1 + 0.15 (k - 1))

Poisson arrivals, SLO p99 <= 12 ms. Capacity (samples/s) = b x the highest M/D/k rate whose
p99 time in system is within 12 ms - d (workload/queueing.py, by simulation).
5 batch sizes x 4 instance counts x 5 delays = 100 configurations."""

import itertools
import threading
import time

B = (1, 2, 4, 8, 16)
K = (1, 2, 3, 4)
D = (0.0, 0.0005, 0.001, 0.002, 0.004)
BOUND_S = 0.012


def service_time(b, k, d):
    return (0.002 * (1 - 0.7 * d / (d + 0.001)) + 0.00025 * b) * (1 + 0.15 * (k - 1))


def true_capacities(queries=10_000) -> dict:
    from pytest_inferbench.workload.queueing import capacity_for_slo
    return {(b, k, d): b * capacity_for_slo(k, service_time(b, k, d), BOUND_S - d, 99.0,
                                            queries=queries)
            for b, k, d in itertools.product(B, K, D)}


def dims():
    from pytest_inferbench.spec.search import SearchDim
    return [SearchDim(name="batch_size", choices=B, ordinal=True),
            SearchDim(name="serving.instances", choices=K, ordinal=True),
            SearchDim(name="serving.max_queue_delay", choices=D, ordinal=True)]


def params(keys):
    return [{"batch_size": b, "serving.instances": k, "serving.max_queue_delay": d}
            for b, k, d in keys]


def live_system(b, k, d):
    """The system itself: each query waits d, then holds one of k instances for T."""
    slots = threading.Semaphore(k)
    t = service_time(b, k, d)

    def query():
        if d:
            time.sleep(d)
        with slots:
            time.sleep(t)
    return query
