"""The `concurrency` scenario: N clients in closed loop, each sending its next query when its
previous one returns (InferBench's multi-concurrency mode, perf_analyzer's --concurrency-range).
"""

from __future__ import annotations

import threading
import time
from array import array

import numpy as np

from ..core.stats import rank, relative_half_width
from .closed_loop import Samples
from .failures import ErrorLog

_CHECK_EVERY_S = 0.25


def _snapshot(starts, ends) -> np.ndarray:
    """Latencies so far. Copies each array's bytes first: a numpy view would export the
    array's buffer, and a client appending to it meanwhile would raise BufferError."""
    parts = []
    for s, e in zip(starts, ends):
        s_np = np.frombuffer(s.tobytes(), np.int64)
        e_np = np.frombuffer(e.tobytes(), np.int64)
        k = min(len(s_np), len(e_np))
        parts.append(e_np[:k] - s_np[:k])
    return np.concatenate(parts) if parts else np.array([], dtype=np.int64)


def run_concurrency(fn, settings, clients: int, target: float = 99.0, progress=None,
                    thread_init=None) -> Samples:
    clock = time.perf_counter_ns
    stop = threading.Event()
    starts = [array("q") for _ in range(clients)]
    ends = [array("q") for _ in range(clients)]
    errors = ErrorLog()
    max_q = settings.max_queries

    def client(k: int):
        if thread_init is not None:
            thread_init()
        add_s, add_e = starts[k].append, ends[k].append
        while not stop.is_set():
            t0 = clock()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - counted, the client goes on
                errors.record(exc)
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
        lat = _snapshot(starts, ends)
        n = len(lat)
        if errors.budget_exceeded(n, settings.max_error_rate):
            reason = "errors"
            break
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
    # a client still inside a hung call is left behind; its query counts as a timeout
    errors.timeout(sum(t.is_alive() for t in threads))
    s_all = np.concatenate([np.frombuffer(s.tobytes(), np.int64)[:len(e)]
                            for s, e in zip(starts, ends)])
    e_all = np.concatenate([np.frombuffer(e.tobytes(), np.int64)[:len(s)]
                            for s, e in zip(starts, ends)])
    samples = Samples(starts_ns=s_all, ends_ns=e_all, busy_ns=end - begin, wall_ns=end - begin,
                      stop_reason=reason, target_percentile=target,
                      ci_half_width_rel=relative_half_width(e_all - s_all, target,
                                                            settings.confidence),
                      warmup_queries=0, warmup_s=0.0, errors=errors)
    samples.extra = {"concurrency": clients, "errors": errors.errors,
                     "timeouts": errors.timeouts}
    return samples
