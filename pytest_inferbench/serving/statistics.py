"""The server's own statistics (Triton's, or the KServe v2 statistics extension) over the
measured windows only, and the latency breakdown they give (queue, compute) next to what the
client measured; what the result records of the server."""

from __future__ import annotations

import time

from .affinity import available
from .http_server import CONCURRENCY


class StatisticsUnavailable(RuntimeError):
    """The server's statistics cannot be read; the message says why, for the result."""


class StatisticsWindow:
    """Triton's statistics over the measured windows only: open() once the warm-up is over,
    close() once the window's last answer is in; the counts of several windows add up (the
    steps of a search). `note` says why there are none."""

    SETTLE_S = 0.02

    def __init__(self, endpoint):     # a client.Endpoint
        self.endpoint = endpoint
        self.delta: dict | None = None
        self.windows = 0
        self.note: str | None = None
        self._before = None

    def _read(self) -> dict:
        # Triton counts a request when it releases it, a moment after its answer is sent:
        # read again until two reads agree (a few at most)
        prev = self.endpoint.statistics()
        for _ in range(5):
            time.sleep(self.SETTLE_S)
            cur = self.endpoint.statistics()
            if cur == prev:
                break
            prev = cur
        return prev

    def open(self) -> None:
        if self.note is not None:
            return
        try:
            self._before = self._read()
        except StatisticsUnavailable as exc:
            self.note = str(exc)

    def close(self) -> None:
        before, self._before = self._before, None
        if before is None:
            return
        try:
            after = self._read()
        except StatisticsUnavailable as exc:
            self.note = f"after the window: {exc}"
            return
        delta = {k: (tuple(a - b for a, b in zip(after[k], v)) if isinstance(v, tuple)
                     else after[k] - v) for k, v in before.items()}
        if self.delta is not None:
            delta = {k: (tuple(a + b for a, b in zip(self.delta[k], v)) if isinstance(v, tuple)
                         else self.delta[k] + v) for k, v in delta.items()}
        self.delta = delta
        self.windows += 1


def breakdown(delta: dict | None, client_mean_ms: float | None, measured: int | None = None,
              attempted: int | None = None) -> dict | None:
    """perf_analyzer-style split of the client's mean latency: queue, compute, the rest, from
    the server's counts over the measured windows (delta); with the number of requests the
    server saw next to the number the client measured (answered) and attempted."""
    if not delta:
        return None
    n = delta["success"][0]
    if n <= 0:
        return None

    def per(key):
        return delta[key][1] / n / 1e6
    queue = per("queue")
    compute = per("compute_input") + per("compute_infer") + per("compute_output")
    execs = delta["execution_count"]
    out = {"requests": n, "server_failed": delta["fail"][0], "queue_ms": queue,
           "compute_input_ms": per("compute_input"), "compute_infer_ms": per("compute_infer"),
           "compute_output_ms": per("compute_output"), "compute_ms": compute,
           "server_ms": per("success"), "executions": execs,
           "avg_batch": delta["inference_count"] / execs if execs else None}
    if measured is not None:
        out["client_measured"] = measured
        out["client_attempted"] = attempted if attempted is not None else measured
        out["requests_match"] = n == measured
        if n != measured:
            out["note"] = (f"the server counted {n} successful requests in the window, the "
                           f"client measured {measured}: the server's times are averages over "
                           f"its own count")
    if client_mean_ms is not None:
        out["client_mean_ms"] = client_mean_ms
        out["other_ms"] = client_mean_ms - queue - compute   # client, network, (de)serialisation
    return out


def server_description(cell, endpoint, launched, breakdown) -> dict:
    """result.serving["server"]: how the server runs the model, as far as can be known: the
    model configuration Triton reports (instances, batching), the runtime threads of the
    plugin's own servers, and the average batch Triton's statistics saw in the window. Read
    after the window."""
    serving = cell.serving
    info = {}
    config = endpoint.model_config() if serving.system in ("triton", "endpoint") else None
    if config:
        info.update(config, source="the server's model configuration API")
    elif serving.system == "endpoint":
        info["source"] = "the server has no model configuration API: instances not known"
    if serving.system == "http":
        info.update(instances=1, concurrency=CONCURRENCY, source="the plugin's FastAPI server")
    if serving.system in ("triton", "http") and cell.device == "cpu":
        # the runtime's intra-op threads in the server process (serving/model_host.py's rule)
        cpus = (launched.get("cpu_affinity") or {}).get("server")
        if cell.threads is not None:
            info["runtime_threads"] = cell.threads.intra or "runtime default"
        else:
            info["runtime_threads"] = len(cpus) if cpus else len(available())
    if breakdown and breakdown.get("avg_batch") is not None:
        info["avg_batch"] = round(breakdown["avg_batch"], 3)    # Triton: samples / executions
    return info
