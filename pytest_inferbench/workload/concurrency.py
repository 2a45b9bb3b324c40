"""The `concurrency` scenario: N clients in closed loop, each sending its next query when its
previous one returns (InferBench's multi-concurrency mode, perf_analyzer's --concurrency-range).
"""

from __future__ import annotations

import threading
import time
from array import array

import numpy as np

from .failures import ErrorLog
from .samples import Samples, SystemUnderTest
from .stopping import CHECK_EVERY_NS, StoppingRule, show_progress


def run(sut: SystemUnderTest, settings, workload, target: float, progress=None) -> Samples:
    """The scenario's entry point (core/scenarios/concurrency.py)."""
    return run_concurrency(sut.call, settings, workload.concurrency, target, progress,
                           sut.thread_init)


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


def _clients(fn, clients: int, thread_init, stop: threading.Event, errors: ErrorLog):
    """Start the client threads; returns (threads, per-client starts, per-client ends)."""
    clock = time.perf_counter_ns
    starts = [array("q") for _ in range(clients)]
    ends = [array("q") for _ in range(clients)]

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
    for t in threads:
        t.start()
    return threads, starts, ends


def run_concurrency(fn, settings, clients: int, target: float = 99.0, progress=None,
                    thread_init=None) -> Samples:
    clock = time.perf_counter_ns
    rule = StoppingRule(settings, target)
    stop = threading.Event()
    errors = ErrorLog()
    begin = clock()
    threads, starts, ends = _clients(fn, clients, thread_init, stop, errors)
    while True:
        time.sleep(CHECK_EVERY_NS / 1e9)
        elapsed = clock() - begin
        lat = _snapshot(starts, ends)
        reason = rule.limit(elapsed, len(lat)) or rule.check(elapsed, lat, errors)
        if reason:
            break
        show_progress(progress, elapsed, lat)
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
                      ci_half_width_rel=rule.half_width(e_all - s_all), errors=errors)
    samples.extra = {"concurrency": clients, "errors": errors.errors,
                     "timeouts": errors.timeouts}
    return samples
