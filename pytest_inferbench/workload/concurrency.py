"""The `concurrency` scenario: N clients in closed loop, each sending its next query when its
previous one returns (InferBench's multi-concurrency mode, perf_analyzer's --concurrency-range).
"""

from __future__ import annotations

import threading
import time
from array import array

import numpy as np

from ..measure.stats import rank, relative_half_width
from .closed_loop import Samples

_CHECK_EVERY_S = 0.25


def run_concurrency(fn, settings, clients: int, target: float = 99.0, progress=None) -> Samples:
    clock = time.perf_counter_ns
    stop = threading.Event()
    starts = [array("q") for _ in range(clients)]
    ends = [array("q") for _ in range(clients)]
    errors = [0] * clients
    max_q = settings.max_queries

    def client(k: int):
        add_s, add_e = starts[k].append, ends[k].append
        while not stop.is_set():
            t0 = clock()
            try:
                fn()
            except Exception:  # noqa: BLE001 - counted, the client goes on
                errors[k] += 1
                continue
            add_s(t0)
            add_e(clock())

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    begin = clock()
    for t in threads:
        t.start()
    reason = "max_duration"
    while True:
        time.sleep(_CHECK_EVERY_S)
        elapsed = clock() - begin
        lat = np.concatenate([np.frombuffer(e, np.int64)[:len(s)] - np.frombuffer(s, np.int64)
                              for s, e in zip(starts, ends)]) if clients else np.array([])
        n = len(lat)
        if max_q is not None and n >= max_q:
            reason = "max_queries"
            break
        if elapsed >= settings.max_duration * 1e9:
            break
        if (elapsed >= settings.min_duration * 1e9 and n >= settings.min_queries
                and relative_half_width(lat, target, settings.confidence) <= settings.ci_width):
            reason = "ci_converged"
            break
        if progress is not None and n:
            k = rank(n, 99) - 1
            progress(elapsed / 1e9, n, float(np.partition(lat, k)[k]) / 1e6)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    end = clock()
    s_all = np.concatenate([np.frombuffer(s, np.int64) for s in starts])
    e_all = np.concatenate([np.frombuffer(e, np.int64)[:len(s)] for s, e in zip(starts, ends)])
    samples = Samples(starts_ns=s_all, ends_ns=e_all, busy_ns=end - begin, wall_ns=end - begin,
                      stop_reason=reason, target_percentile=target,
                      ci_half_width_rel=relative_half_width(e_all - s_all, target,
                                                            settings.confidence),
                      warmup_queries=0, warmup_s=0.0)
    samples.extra = {"concurrency": clients, "errors": sum(errors)}
    return samples
