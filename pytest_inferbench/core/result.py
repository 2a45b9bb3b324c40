"""The result of one cell, as stored in run files and returned by the `inferbench` fixture.

Every model allows extra fields and gives every field a default, so a run file written by a
newer version (with fields added) still reads, and an older file reads with None/defaults.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .stats import percentile_with_bounds


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Percentile(_Open):
    value: float
    lower: float | None = None   # distribution-free bound at `confidence`; None = not enough n
    upper: float | None = None


class Latency(_Open):
    """Latency in milliseconds; `n` samples; percentiles keyed 'p50', 'p99.9', ..."""
    n: int = 0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    confidence: float = 0.95
    percentiles: dict[str, Percentile] = Field(default_factory=dict)
    histogram: dict[str, list] | None = None   # {"edges_ms": [...], "counts": [...]}

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


class Throughput(_Open):
    queries_per_s: float | None = None
    samples_per_s: float | None = None
    # samples/s interval at the latency's confidence, by batch means (core/stats.rate_interval)
    lower: float | None = None
    upper: float | None = None


class Stop(_Open):
    reason: str | None = None            # ci_converged | max_duration | max_queries
    target_percentile: float | None = None
    ci_half_width_rel: float | None = None
    ci_width: float | None = None


class Result(_Open):
    """One cell's measurement (or the reason it has none)."""
    id: str = ""
    status: str = "passed"               # passed | failed | skipped
    reason: str | None = None
    cell: dict[str, Any] | None = None
    scenario: str | None = None
    batch_size: int = 1
    latency_ms: Latency = Field(default_factory=Latency)
    throughput: Throughput = Field(default_factory=Throughput)
    stop: Stop = Field(default_factory=Stop)
    duration_s: float | None = None      # busy time the throughput is computed over
    wall_s: float | None = None
    warmup: dict[str, Any] = Field(default_factory=dict)
    process: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    runtime: dict[str, Any] = Field(default_factory=dict)
    gpu: dict[str, Any] | None = None    # GPU monitor over the window (cuda cells)
    device_time: dict[str, Any] | None = None  # CUDA events: sampled spans, device ms, busy share
    load: dict[str, Any] | None = None   # open loop / concurrency: rates, send lag, errors
    slo: dict[str, Any] | None = None    # early-stopping verdict when the workload has an SLO
    valid: bool = True                   # False when the load generator fell behind
    serving: dict[str, Any] | None = None  # served cells: system, url, latency breakdown
    errors: dict[str, Any] | None = None   # failed queries: counts, rate, first kinds
    # generative serving: ttft/itl/tpot/e2e percentiles, tokens/s, goodput (workload/generative.py)
    generative: dict[str, Any] | None = None
    requests: list[dict[str, Any]] | None = None   # per-request records (keep_requests: true)
    # configuration search: on the search's own result, the trials, the winner and why it
    # stopped (optimize/answer.py); on each trial's result, which search and trial it is
    search: dict[str, Any] | None = None
    search_trial: dict[str, Any] | None = None

    @property
    def latency(self) -> Latency:
        return self.latency_ms

    def to_json(self) -> dict:
        return self.model_dump(mode="json")
