"""Cells across runs: what identifies one (its resolved configuration, not its file or line),
whether a result measured anything, and a run's value of a metric with its sampling error.
Used by the gate, the results store and the history alike, on typed Results."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from ..core.result import Histogram, Percentile, Result
from ..core.stats import bound_ranks, rank
from ..core.verdicts import Obs, quantile

# Cell fields that do not change what is measured: where it is written and how long it runs.
_NOT_CONFIG = ("id", "spec", "spec_name", "entry", "line", "marks", "settings", "gate", "ab",
               "model_label", "placement")


def config_key(result: Result | dict) -> str:
    """What identifies a cell across runs: its resolved configuration. (A result's JSON is
    taken too: the key is what matches cells of run files and spec entries.)"""
    if isinstance(result, dict):
        result = Result.model_validate(result)
    cell = result.cell or {}        # the spec's Cell, as JSON
    if "runtime" not in cell:       # a hand-written benchmark (the fixture): its test id
        return "id:" + str(result.id or "")
    config = {k: v for k, v in cell.items() if k not in _NOT_CONFIG}
    ab = result.ab
    if ab is not None and ab.reference:     # a reference pair is a series of its own
        config["reference"] = ab.baseline.changes if ab.baseline is not None else "?"
    for section, key in (("model", "path"), ("workload", "trace"), ("serving", "data")):
        value = config.get(section)
        if isinstance(value, dict) and value.get(key):
            config[section] = {**value, key: Path(str(value[key])).name}
    return json.dumps(config, sort_keys=True, default=str)


def display(result: Result) -> str:
    cell = result.cell or {}
    if cell.get("spec") and cell.get("id"):
        return f"{Path(str(cell['spec'])).name}::{cell['id']}"
    return str(result.id or "?")


def in_search(result: Result) -> bool:
    """A configuration search's own result, or one of its trials: explorations, which the
    gate does not judge (a search tries different configurations from run to run)."""
    return result.search is not None or result.search_trial is not None


def search_columns(result: Result) -> dict:
    """A frame's `search_role` ("search": a search's own row, its answer in `search` as JSON;
    "trial": one of its trials; None) and `search`."""
    answer = result.search.model_dump(mode="json") if result.search is not None else None
    role = "search" if answer else "trial" if result.search_trial is not None else None
    return {"search_role": role, "search": answer}


def trial_name(result: Result) -> str | None:
    """A search trial is labelled as the cell it measured (its id is the search's)."""
    cell = result.cell if isinstance(result.cell, dict) else {}
    return str(cell["id"]) if result.search_trial is not None and cell.get("id") else None


def is_measured(result: Result) -> bool:
    """Passed with samples, or failed only on its own verdicts (`failed_on`: a missed SLO,
    INVALID), which --infer-fail-on turns into a failed item without losing the numbers."""
    ok = result.status == "passed" or (result.status == "failed" and bool(result.failed_on))
    return ok and bool(result.latency_ms.n)


def group_by_config(results) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(config_key(r), []).append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: r.repeat or 0)
    return groups


def observe(result: Result, metric: str) -> Obs:
    """A run's value of a metric with the standard error of its log from within the run."""
    lat = result.latency_ms
    n = lat.n or 0
    mean, std = lat.mean, lat.std
    mean_se = (std / (mean * math.sqrt(n)) if mean and std is not None and n > 1 else math.inf)
    if metric == "throughput":
        return Obs(result.throughput.samples_per_s, mean_se)
    if metric == "mean":
        return Obs(mean, mean_se)
    confidence = lat.confidence or 0.95
    pct = lat.percentiles.get(metric)
    if pct is None:
        pct = histogram_percentile(lat.histogram, float(metric[1:]), confidence)
    if pct is None:
        return Obs(None)
    lo, hi, value = pct.lower, pct.upper, pct.value
    if lo is None or hi is None or lo <= 0 or hi <= 0:
        return Obs(value, math.inf)
    z = quantile((1 + confidence) / 2, None)
    return Obs(value, (math.log(hi) - math.log(lo)) / (2 * z))


def histogram_percentile(hist: Histogram | None, p: float, confidence: float
                         ) -> Percentile | None:
    """A percentile and its distribution-free bounds from the stored 2%-bin histogram (each
    to within its bin: the upper edge of the bin holding the rank)."""
    if isinstance(hist, dict):      # log_histogram's own output
        hist = Histogram.model_validate(hist)
    if hist is None or not hist.counts:
        return None
    counts, edges = hist.counts, hist.edges_ms
    n = int(sum(counts))
    if n < 1:
        return None
    cum = []
    total = 0
    for c in counts:
        total += c
        cum.append(total)

    def at(r):
        for i, c in enumerate(cum):
            if c >= r:
                return float(edges[i + 1])
        return float(edges[-1])
    lo, hi = bound_ranks(n, p, confidence)
    return Percentile(value=at(rank(n, p)), lower=at(lo) if lo else None,
                      upper=at(hi) if hi else None)


def cell_key(result: Result) -> str:
    """config_key as a short stable hash: the results store's key of a cell's series."""
    return hashlib.sha256(config_key(result).encode()).hexdigest()[:24]
