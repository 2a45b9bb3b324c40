"""Paired mode: a baseline (A) and the candidate (B, the cell as written) measured interleaved in
one session, on the device held throughout, and judged on their per-round ratios.

Why: on a shared machine the same cell moves by tens of percent between runs (DESIGN.md,
"Noise on these machines"), so a number from another time is no evidence of a 10% change.
Interleaving makes both sides see the same machine. Each round measures A and B for `slice`
seconds each, in sub-slices of `switch` seconds (10 ms by default) that alternate between the
sides, in the order A B B A A B ... (a round that starts with B mirrors it; rounds alternate),
so drift and other tenants' bursts hit both sides alike. Measured on the 2-core development
machine under another process's load: one 0.25 s slice per side gave a round-to-round sd of
the p50 ratio of 12.5%; the same time in 10-25 ms sub-slices gave 2.6-4.6%.

Each round yields, per side, the percentiles, mean and throughput of that round's queries;
the candidate/baseline ratio of each gated metric is one observation per round. The verdict
(gate/stats.py) is a Student t interval on the mean log ratio, Holm over the cell's metrics
and Bonferroni over the session's paired cells and over the planned looks: after `rounds`,
then at each doubling up to `max_rounds`, rounds are added while any metric is undetermined
(as Chromium's Pinpoint adds runs), and the split of the error rate over the looks keeps
that optional stopping honest.

The cell's result is the candidate's measurement (every B query of every round), with
`result.ab` holding the rounds, the ratios, the baseline's summary and the verdicts.
"""

from __future__ import annotations

import gc
import time
from array import array

import numpy as np

from ..gate.stats import UNDETERMINED, cell_verdict, judge, look_schedule
from ..gate.thresholds import GateConfig
from ..results.model import Latency, Result, Stop, Throughput
from .stats import percentile

ROUND_METRICS = ("p50", "p90", "p99", "mean", "throughput")


# ----------------------------------------------------------------------------- sides

class LocalSide:
    """A cell's runner loaded in this process, with its prepared query callable."""

    def __init__(self, cell, cache):
        from ..models.check import check_cell
        from ..runtimes import runner_class
        from ..runtimes.base import LoadContext
        from .engine import _threads_for
        self.cell = cell
        self.runner = runner_class(cell.runtime)()
        threads, _ = _threads_for(cell)
        self.context = LoadContext(cache=cache, seed=cell.settings.seed,
                                   options=cell.runtime_options, threads=threads)
        try:
            self.runner.load(cell.model, cell.device, cell.precision, self.context)
            self.check = check_cell(cell, self.runner, self.context, cache.root)
            inputs = self.context.signature.generate(cell.batch_size, seed=cell.settings.seed)
            self.fn = self.runner.prepare(inputs)
            self.fn()               # lazy initialisation, outside any accounting
            self.runner.synchronize()
        except BaseException:
            self.runner.close()
            raise
        self.batch_size = cell.batch_size

    def warm(self, warmup) -> None:
        from ..workload.closed_loop import _warmup
        _warmup(self.fn, warmup)

    def run(self, seconds: float, out: array) -> int:
        """Queries back to back for `seconds`; latencies (ns) appended to out; busy ns."""
        fn = self.fn
        clock = time.perf_counter_ns
        add = out.append
        t0 = clock()
        end = t0 + int(seconds * 1e9)
        last = t0
        while last < end:
            fn()
            now = clock()
            add(now - last)
            last = now
        return last - t0

    def info(self) -> dict:
        cell = self.cell
        return {"model": cell.model_label, "runtime": self.runner.info(),
                "model_info": {"label": cell.model_label, **self.context.model_info,
                               "check": self.check},
                "process": "in-process"}

    def close(self) -> None:
        self.runner.close()


def baseline_cell(cell):
    """The candidate cell with the baseline's in-process overrides applied."""
    b = cell.ab.baseline
    update = {}
    if b.model is not None:
        update.update(model=b.model, model_label=b.model_label)
    if b.runtime is not None:
        update.update(runtime=b.runtime, runtime_options=b.runtime_options or {})
    if b.precision is not None:
        update["precision"] = b.precision
    if b.threads is not None:
        update["threads"] = b.threads
    return cell.model_copy(update={**update, "ab": None})


def _torch_thread_clash(a, b) -> str | None:
    torchy = ("torch", "torchscript", "torch_compile")
    if a.runtime in torchy and b.runtime in torchy and a.threads != b.threads:
        return ("the two sides set different torch thread counts, and torch has one thread pool "
                "per process: run the baseline in its own process (ab.baseline.python: the "
                "same interpreter) or give both the same threads")
    return None


def make_baseline_side(cell, cache, rootdir=None):
    b = cell.ab.baseline
    base = baseline_cell(cell)
    if b.python is not None or b.git is not None:
        from .remote import RemoteSide
        return RemoteSide(base, cache, python=b.python, git=b.git, rootdir=rootdir)
    clash = _torch_thread_clash(base, cell)
    if clash:
        raise ValueError(clash)
    return LocalSide(base, cache)


# ----------------------------------------------------------------------------- rounds

def round_metrics(latencies_ns: np.ndarray, busy_ns: int, batch_size: int,
                  metrics) -> dict:
    """A side's figures for one round: percentiles and mean (ms), throughput (samples/s)."""
    out = {}
    if not len(latencies_ns):
        return {m: None for m in metrics}
    ms = np.sort(latencies_ns.astype(np.float64) / 1e6)
    for m in metrics:
        if m == "throughput":
            out[m] = len(ms) * batch_size / (busy_ns / 1e9) if busy_ns > 0 else None
        elif m == "mean":
            out[m] = float(ms.mean())
        else:
            out[m] = percentile(ms, float(m[1:]))
    return out


def run_paired_cell(cell, cache, progress=None, cells: int = 1, rootdir=None) -> Result:
    """Measure a cell with `ab`: baseline and candidate interleaved; see the module doc.
    cells: how many paired cells the session judges (the Bonferroni family)."""
    from .monitors import ProcessMonitor
    ab = cell.ab
    gate = GateConfig.from_json(cell.gate) if cell.gate is not None else GateConfig()
    metrics = tuple(dict.fromkeys(ROUND_METRICS + tuple(gate.thresholds)))
    looks = look_schedule(ab.rounds, ab.cap)
    a_side = make_baseline_side(cell, cache, rootdir)
    try:
        b_side = LocalSide(cell, cache)
    except BaseException:
        a_side.close()
        raise
    sub = ab.switch
    k = max(1, round(ab.slice / sub))
    lat = {"a": array("q"), "b": array("q")}
    busy = {"a": 0, "b": 0}
    per_round = {"a": [], "b": []}
    judgements = []
    monitor = ProcessMonitor()
    gc_was_enabled = gc.isenabled()
    t_start = time.perf_counter()
    stopped = "max_rounds"
    started = False
    try:
        t0 = time.perf_counter()
        a_side.warm(cell.settings.warmup)
        b_side.warm(cell.settings.warmup)
        warm_s = time.perf_counter() - t0
        _round(a_side, b_side, 0, min(k, 4), sub, {"a": array("q"), "b": array("q")})  # discard
        gc.collect()
        gc.disable()
        monitor.start()
        started = True
        n = 0
        for i, target in enumerate(looks):
            while n < target:
                got = {"a": array("q"), "b": array("q")}
                spent = _round(a_side, b_side, n, k, sub, got)
                for side, side_obj in (("a", a_side), ("b", b_side)):
                    arr = np.frombuffer(got[side], dtype=np.int64)
                    per_round[side].append(round_metrics(arr, spent[side],
                                                         side_obj.batch_size, metrics))
                    lat[side].extend(got[side])
                    busy[side] += spent[side]
                n += 1
                if progress is not None:
                    progress(time.perf_counter() - t_start, len(lat["b"]), None)
            judgements = judge(_ratios(per_round, metrics), gate, len(looks), cells)
            if all(j.verdict != UNDETERMINED for j in judgements):
                stopped = "decided"
                break
    finally:
        if gc_was_enabled:
            gc.enable()
        process = monitor.stop() if started else {}
        b_info = _safe_info(b_side)
        a_info = _safe_info(a_side)
        a_side.close()
        b_side.close()
    wall = time.perf_counter() - t_start
    lat_b = np.frombuffer(lat["b"], dtype=np.int64)
    lat_a = np.frombuffer(lat["a"], dtype=np.int64)
    settings = cell.settings
    result = _side_result(lat_b, busy["b"], cell, settings)
    result.stop = Stop(reason=f"paired_{stopped}", target_percentile=None,
                       ci_half_width_rel=None, ci_width=settings.ci_width)
    result.wall_s = round(wall, 6)
    result.warmup = {"queries": None, "seconds": round(warm_s, 4)}
    result.process = process
    result.runtime = b_info.get("runtime") or {}
    result.model = {**(b_info.get("model_info") or {}),
                    "inputs": {t.name: {"shape": [cell.batch_size, *t.shape], "dtype": t.dtype}
                               for t in b_side.context.signature.inputs}}
    base = _side_result(lat_a, busy["a"], baseline_cell(cell), settings)
    verdict = cell_verdict(judgements)
    result.ab = {
        "verdict": verdict,
        "baseline": {"changes": ab.baseline.label(), "model": a_info.get("model"),
                     "runtime": a_info.get("runtime"), "process": a_info.get("process"),
                     **{k: a_info[k] for k in ("python", "versions") if k in a_info},
                     "latency_ms": base.latency_ms.model_dump(mode="json", exclude={"histogram"}),
                     "throughput": base.throughput.model_dump(mode="json")},
        "rounds": len(per_round["b"]), "looks": len(looks), "look_at": looks,
        "stopped": stopped, "cells": cells, "slice_s": ab.slice, "switch_s": sub,
        "sub_slices": k, "gate": gate.to_json(),
        "ratios": _ratios(per_round, metrics, digits=6),
        "metrics": [j.to_json() for j in judgements],
    }
    return result


def _safe_info(side) -> dict:
    try:
        return side.info()
    except Exception:  # noqa: BLE001 - informational only
        return {}


def _round(a_side, b_side, index: int, k: int, sub: float, out: dict) -> dict:
    """One round: k sub-slices per side, alternating A B B A ... (mirrored on odd rounds)."""
    spent = {"a": 0, "b": 0}
    a_first = index % 2 == 0
    for j in range(k):
        first_a = a_first == (j % 2 == 0)
        order = (("a", a_side), ("b", b_side)) if first_a else (("b", b_side), ("a", a_side))
        for name, side in order:
            spent[name] += side.run(sub, out[name])
    return spent


def _ratios(per_round: dict, metrics, digits: int | None = None) -> dict:
    out = {}
    for m in metrics:
        values = []
        for ra, rb in zip(per_round["a"], per_round["b"]):
            a, b = ra.get(m), rb.get(m)
            r = b / a if a and b else None
            values.append(round(r, digits) if (r is not None and digits) else r)
        out[m] = values
    return out


def _side_result(latencies_ns: np.ndarray, busy_ns: int, cell, settings) -> Result:
    n = len(latencies_ns)
    qps = n / (busy_ns / 1e9) if busy_ns > 0 and n else None
    return Result(scenario=cell.workload.scenario, batch_size=cell.batch_size,
                  latency_ms=Latency.from_ns(latencies_ns, settings.percentiles,
                                             settings.confidence),
                  throughput=Throughput(queries_per_s=qps,
                                        samples_per_s=qps * cell.batch_size if qps else None),
                  duration_s=round(busy_ns / 1e9, 6))


# ----------------------------------------------------------------------------- messages

def failure_message(result: Result) -> str:
    """The item's failure text for a paired regression: which metrics, by how much, with what
    confidence, against what."""
    ab = result.ab or {}
    lines = [f"paired A/B regression after {ab.get('rounds')} rounds (candidate: this cell; "
             f"baseline: {ab.get('baseline', {}).get('changes')})"]
    for m in ab.get("metrics", []):
        if m.get("verdict") == "regression":
            lines.append(f"  {m['reason']}")
    return "\n".join(lines)


def summary_line(ab: dict) -> str:
    parts = []
    for m in ab.get("metrics", []):
        r = m.get("ratio")
        ch = f"{100 * (r - 1):+.1f}%" if r else "?"
        parts.append(f"{m['metric']} {ch} ({m['verdict']})")
    return (f"{ab.get('verdict')}: " + ", ".join(parts) +
            f"; {ab.get('rounds')} rounds vs {ab.get('baseline', {}).get('changes')}")


