"""What queueing theory allows a known system: the reference the rate searches are checked
against (tests/test_search.py, benchmarks/open_loop_validity.py).

The system: k identical servers, a fixed service time s, one FIFO queue, Poisson arrivals
(M/D/k). Its throughput limit is k/s; the highest rate whose p-th percentile of time in the
system stays within a bound is found by simulating the queue (exact for this model, up to
sampling error) and bisecting on the rate.
"""

from __future__ import annotations

import heapq
import statistics
import time

import numpy as np


def sleep_service_time(seconds: float, samples: int = 30) -> float:
    """What time.sleep(seconds) really takes on this host (it oversleeps a little): the
    service time of a sleep-based system of known capacity."""
    taken = []
    for _ in range(samples):
        t = time.perf_counter()
        time.sleep(seconds)
        taken.append(time.perf_counter() - t)
    return statistics.median(taken)


def sojourn_percentile(rate: float, servers: int, service_s: float, percentile: float,
                       queries: int = 200_000, seed: int = 0) -> float:
    """p-th percentile of time in system (wait + service), in seconds, of M/D/k at `rate`."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, queries))
    free = [0.0] * servers              # when each server is next free (a min-heap)
    sojourn = np.empty(queries)
    for i, t in enumerate(arrivals.tolist()):
        start = max(t, free[0])
        heapq.heapreplace(free, start + service_s)
        sojourn[i] = start + service_s - t
    return float(np.percentile(sojourn[queries // 10:], percentile))   # skip the empty start


def capacity_for_slo(servers: int, service_s: float, bound_s: float, percentile: float = 99.0,
                     tolerance: float = 0.005, queries: int = 200_000) -> float:
    """Highest Poisson rate whose p-th percentile time in system is within bound_s."""
    if service_s > bound_s:
        return 0.0
    lo, hi = 0.0, servers / service_s
    while (hi - lo) / hi > tolerance:
        mid = (lo + hi) / 2
        if sojourn_percentile(mid, servers, service_s, percentile, queries) <= bound_s:
            lo = mid
        else:
            hi = mid
    return lo
