"""The result of one cell, as stored in run files and returned by the `inferbench` fixture.

Every section is a typed model (core/sections.py) that rejects unknown keys: a key the current
code does not declare is a bug where it is written, not a None where it is read. Older run
files are read through one upgrade step (results/upgrade.py), which sets aside what this
version does not know before the models see it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from .sections import (AB, DeviceTime, Errors, FreshProcess, Gpu, Goodput, GenerativeLag, Load,
                       ModelInfo, Placement, Process, RuntimeInfo, Search, SearchTrial, Section,
                       Serving, Slo, Tokens, Warmup, Window)
from .stats import percentile_with_bounds


class Percentile(Section):
    value: float
    lower: float | None = None   # distribution-free bound at `confidence`; None = not enough n
    upper: float | None = None


class Histogram(Section):
    """Log-spaced bins (2% wide): `counts[i]` latencies in [edges_ms[i], edges_ms[i+1])."""
    edges_ms: list[float]
    counts: list[int]


class Latency(Section):
    """Latency in milliseconds; `n` samples; percentiles keyed 'p50', 'p99.9', ..."""
    n: int = 0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    confidence: float = 0.95
    percentiles: dict[str, Percentile] = Field(default_factory=dict)
    histogram: Histogram | None = None

    def __getattr__(self, name: str):
        # result.latency.p99 -> value in ms, for use in assertions
        pct = self.__dict__.get("percentiles") or {}
        if name.startswith("p") and name in pct:
            return pct[name].value
        key = "p" + name[1:].replace("_", ".")
        if name.startswith("p") and key in pct:
            return pct[key].value
        return super().__getattr__(name)

    @classmethod
    def from_ns(cls, latencies_ns: np.ndarray, percentiles, confidence: float) -> "Latency":
        if len(latencies_ns) == 0:
            return cls(confidence=confidence)
        ms = np.sort(latencies_ns.astype(np.float64) / 1e6)
        pct = {}
        for p in percentiles:
            value, lo, hi = percentile_with_bounds(ms, p, confidence)
            pct[percentile_key(p)] = Percentile(value=value, lower=lo, upper=hi)
        return cls(n=len(ms), mean=float(ms.mean()), std=float(ms.std(ddof=1)) if len(ms) > 1
                   else 0.0, min=float(ms[0]), max=float(ms[-1]), confidence=confidence,
                   percentiles=pct, histogram=log_histogram(ms))


HISTOGRAM_GROWTH = 1.02    # each bin 2% wider than the last: any latency to within 2%


def log_histogram(sorted_ms: np.ndarray) -> dict | None:
    """The whole distribution in a few hundred numbers (for CDFs and rank tests on stored
    runs): log-spaced bin edges from the minimum to the maximum, and the count in each."""
    if not len(sorted_ms) or sorted_ms[0] <= 0:
        return None
    lo, hi = float(sorted_ms[0]), float(sorted_ms[-1])
    bins = max(1, int(np.ceil(np.log(hi / lo) / np.log(HISTOGRAM_GROWTH))) if hi > lo else 1)
    edges = lo * HISTOGRAM_GROWTH ** np.arange(bins + 1)
    edges[-1] = max(edges[-1], hi)
    counts = np.histogram(sorted_ms, bins=edges)[0]
    return {"edges_ms": [float(f"{e:.6g}") for e in edges], "counts": counts.tolist()}


def percentile_key(p: float) -> str:
    return f"p{p:g}"


class Throughput(Section):
    queries_per_s: float | None = None
    samples_per_s: float | None = None
    # samples/s interval at the latency's confidence, by batch means (core/stats.rate_interval)
    lower: float | None = None
    upper: float | None = None


class Stop(Section):
    reason: str | None = None            # ci_converged | max_duration | max_queries
    target_percentile: float | None = None
    ci_half_width_rel: float | None = None
    ci_width: float | None = None


class Generative(Section):
    """Generative serving figures (workload/generative_metrics.py)."""
    ttft_ms: Latency | None = None       # time to first token
    itl_ms: Latency | None = None        # inter-token latency
    tpot_ms: Latency | None = None       # time per output token
    e2e_ms: Latency | None = None
    requests: int | None = None
    completed: int | None = None
    window_s: float | None = None
    requests_per_s: float | None = None
    output_tokens_per_s: float | None = None
    total_tokens_per_s: float | None = None
    streamed: bool | None = None
    tokens: Tokens | None = None
    goodput: Goodput | None = None
    send_lag_ms: GenerativeLag | None = None
    client_lag_effect: float | None = None
    note: str | None = None



class Result(Section):
    """One cell's measurement (or the reason it has none)."""
    id: str = ""
    status: str = "passed"               # passed | failed | skipped
    reason: str | None = None
    # the resolved spec Cell as JSON: its model lives in spec/, a layer above core
    cell: dict[str, Any] | None = None
    scenario: str | None = None
    batch_size: int = 1
    latency_ms: Latency = Field(default_factory=Latency)
    throughput: Throughput = Field(default_factory=Throughput)
    stop: Stop = Field(default_factory=Stop)
    duration_s: float | None = None      # busy time the throughput is computed over
    wall_s: float | None = None
    warmup: Warmup = Field(default_factory=Warmup)
    process: Process = Field(default_factory=Process)
    model: ModelInfo = Field(default_factory=ModelInfo)
    runtime: RuntimeInfo = Field(default_factory=RuntimeInfo)
    gpu: Gpu | None = None               # GPU monitor over the window (cuda cells)
    device_time: DeviceTime | None = None  # CUDA events: sampled spans, device ms, busy share
    load: Load | None = None             # open loop / concurrency: rates, send lag, errors
    slo: Slo | None = None               # early-stopping verdict when the workload has an SLO
    valid: bool = True                   # False when the load generator fell behind
    # the verdicts --infer-fail-on turned into a failed item (slo, invalid): measured all the
    # same, so the gate still compares it
    failed_on: list[str] | None = None
    serving: Serving | None = None       # served cells: system, url, latency breakdown
    errors: Errors | None = None         # failed queries: counts, rate, first kinds
    # generative serving: ttft/itl/tpot/e2e percentiles, tokens/s, goodput (workload/generative.py)
    generative: Generative | None = None
    # per-request records (keep_requests: true), as workload/generative.py's records write them
    requests: list[dict[str, Any]] | None = None
    # configuration search: on the search's own result, the trials, the winner and why it
    # stopped (optimize/answer.py); on each trial's result, which search and trial it is
    search: Search | None = None
    search_trial: SearchTrial | None = None
    window: Window | None = None         # the measured window (wall clock)
    placement: Placement | None = None   # where the scheduler ran it (distributed sessions)
    ab: AB | None = None                 # paired mode: the verdict and the baseline side
    repeat: int | None = None            # --infer-repeat or processes: which run (1-based) of
    repeats: int | None = None           # how many
    fresh_process: FreshProcess | None = None  # processes: N: the worker process that measured it
    # what a run file of another version (1, or a newer one) held that this version does not
    # declare, by dotted path (results/upgrade.py): kept for whoever needs it, read by nothing
    unknown_fields: dict[str, Any] | None = None

    @property
    def latency(self) -> Latency:
        return self.latency_ms

    def to_json(self) -> dict:
        return self.model_dump(mode="json")
