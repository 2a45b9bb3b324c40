"""Paired mode: a baseline (A) and the candidate (B, the cell as written) measured interleaved in
one session, on the device held throughout, and judged on their per-round ratios.

Why: on a shared machine the same cell moves by tens of percent between runs (a small CNN's
p50 measured 4.5 to 7.4 ms on the 2-core development machine), so a number from another time
is no evidence of a 10% change.
Interleaving makes both sides see the same machine. Each round measures A and B for `slice`
seconds each, in sub-slices of `switch` seconds (10 ms by default) that alternate between the
sides, in the order A B B A A B ... (a round that starts with B mirrors it; rounds alternate),
so drift and other tenants' bursts hit both sides alike. Measured on the 2-core development
machine under another process's load: one 0.25 s slice per side gave a round-to-round sd of
the p50 ratio of 12.5%; the same time in 10-25 ms sub-slices gave 2.6-4.6%.

Each round yields, per side, the percentiles, mean and throughput of that round's queries;
the candidate/baseline ratio of each gated metric is one observation per round. The verdict
(core/verdicts.py) is a Student t interval on the mean log ratio, Holm over the cell's metrics
and Bonferroni over the session's paired cells and over the planned looks: after `rounds`,
then at each doubling up to `max_rounds`, rounds are added while any metric is undetermined
(as Chromium's Pinpoint adds runs), and the split of the error rate over the looks keeps
that optional stopping honest.

The cell's result is the candidate's measurement (every B query of every round), with
`result.ab` holding the rounds, the ratios, the baseline's summary and the verdicts. With
`processes: P` the same rounds run in pairs of fresh processes (run/paired_processes.py).
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.result import Latency, Result, Stop, Throughput
from ..core.stats import percentile
from ..core.thresholds import GateConfig
from ..core.verdicts import UNDETERMINED, cell_verdict, judge, look_schedule
from ..serving.affinity import pinned
from ..workload import arrivals
from ..workload.engine import Window, finish, target_percentile
from ..workload.failures import ErrorLog
from ..workload.open_loop import lag_validity, run_open_loop
from .remote import RemoteSide
from .sides import LocalSide, ServedSide

ROUND_METRICS = ("p50", "p90", "p99", "mean", "throughput")
OPEN_ROUND_METRICS = ("p50", "p90", "p99", "mean")   # the rate is offered, not measured


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


class ClosedLoopDrive:
    """Closed loop: each sub-slice runs the side's queries back to back."""
    open_loop = False

    def reset(self) -> None:
        pass

    def __call__(self, side, seconds: float, out: array, index: int, j: int) -> int:
        return side.run(seconds, out)


class OpenLoopDrive:
    """Open loop at the cell's rate: each sub-slice sends a fresh schedule of `seconds` to
    the side, timed from the scheduled sends (workload/open_loop.py), then waits for its
    answers before the other side starts, so no query of one side is in flight while the
    other is measured. Both sides get the same schedule in the same position of a round
    (common random numbers: the ratio then compares the systems, not two draws of arrivals).
    A queue starts empty in every sub-slice; both sides alike, which is why open-loop pairs
    use longer sub-slices (0.5 s by default) than closed-loop ones."""
    open_loop = True

    def __init__(self, cell):
        self.workload = cell.workload
        self.settings = cell.settings
        self.slices = {}            # id(side) -> per-slice latencies and load figures
        self.target = target_percentile(cell.settings, cell.workload)

    def reset(self) -> None:
        self.slices = {}

    def __call__(self, side, seconds: float, out: array, index: int, j: int) -> int:
        w = self.workload
        seed = (self.settings.seed * 1_000_003 + index * 1009 + j) % (2 ** 32)
        sched = arrivals.schedule(w.arrival, w.rate, seconds, seed=seed,
                                  burstiness=w.burstiness, on_s=w.on, off_s=w.off,
                                  exact_count=True)
        settings = self.settings.model_copy(update={"min_duration": seconds,
                                                    "max_duration": seconds + 1.0,
                                                    "warmup": 0})
        samples = run_open_loop(side.sut(), sched, settings, w.timeout, w.send_lag_bound,
                                self.target, decide=lambda latencies, waiting: False)
        lat = samples.latencies_ns.astype(np.int64)
        out.extend(lat.tolist())
        side.errors.merge(samples.errors)
        x = samples.extra
        kept = self.slices.setdefault(id(side), {"sched": [], "sent": [], "extra": []})
        kept["sched"].append(lat)
        kept["sent"].append(samples.ends_ns - samples.sent_ns)
        kept["extra"].append(x)
        return samples.wall_ns

    def load(self, side) -> dict:
        """The side's open-loop figures over all its sub-slices. Validity is judged on the
        pooled queries (a sub-slice alone holds too few for a p99): the lag effect on the
        target percentile, and the rate sent against the rate scheduled, summed over slices."""
        kept = self.slices.get(id(side), {"sched": [], "sent": [], "extra": []})
        slices = kept["extra"]
        issued = sum(x["issued"] for x in slices)
        late = sum(x["late_sends"] for x in slices)
        lag99 = [x["send_lag_ms"]["p99"] for x in slices if x["send_lag_ms"]["p99"] is not None]
        # spans: (queries - 1) / rate per slice, so the pooled rates weigh slices by length
        spans = [(x["issued"] - 1, (x["issued"] - 1) / x["scheduled_rate"],
                  (x["issued"] - 1) / x["achieved_rate"]) for x in slices
                 if x["scheduled_rate"] and x["achieved_rate"]]
        gaps = sum(s[0] for s in spans)
        scheduled = gaps / sum(s[1] for s in spans) if spans else None
        achieved = gaps / sum(s[2] for s in spans) if spans else None
        lag_worst = max(lag99) if lag99 else None
        pooled = (np.concatenate(kept["sched"]) if kept["sched"] else np.zeros(0, np.int64),
                  np.concatenate(kept["sent"]) if kept["sent"] else np.zeros(0, np.int64))
        effect, problems = lag_validity(pooled[0], pooled[1], self.target, lag_worst,
                                        scheduled, achieved)
        if not issued:
            problems.append("no query was sent")
        return {"target_rate": self.workload.rate, "arrival": self.workload.arrival,
                "slices": len(slices), "issued": issued,
                "completed": sum(x["completed"] for x in slices),
                "scheduled_rate": scheduled, "achieved_rate": achieved,
                "send_lag_ms": {"p99_worst_slice": lag_worst,
                                "p99_median_slice": float(np.median(lag99)) if lag99 else None},
                "late_sends": late, "late_fraction": late / issued if issued else 0.0,
                "send_lag_bound_ms": self.workload.send_lag_bound * 1e3,
                "lag_effect": effect, "valid": not problems, "invalid_reasons": problems}


@dataclass
class PairedPlan:
    """What a paired cell runs: its rounds' shape, the metrics judged and when to look."""
    cell: Any
    cells: int

    def __post_init__(self):
        cell = self.cell
        self.ab = cell.ab.for_scenario(cell.workload.scenario)
        self.gate = GateConfig.from_json(cell.gate) if cell.gate is not None else GateConfig()
        open_loop = cell.workload.scenario_def.open_loop
        self.drive = OpenLoopDrive(cell) if open_loop else ClosedLoopDrive()
        base = OPEN_ROUND_METRICS if open_loop else ROUND_METRICS
        self.metrics = tuple(dict.fromkeys(base + tuple(self.gate.thresholds)))
        # with `processes: P`, the judged unit is a pair of fresh processes (P, then more
        # pairs while undecided, up to ab.max_processes), each pair running `rounds` rounds
        self.processes = cell.settings.processes
        self.looks = (look_schedule(self.processes, self.ab.pair_cap(self.processes))
                      if self.processes else look_schedule(self.ab.rounds, self.ab.cap))
        if self.ab.reference:       # nothing to decide in the session: its rounds, once
            self.looks = [self.ab.rounds]
        self.sub = self.ab.switch
        self.k = max(1, round(self.ab.slice / self.sub))


@dataclass
class Rounds:
    """What the rounds measured, per side ("a", "b"): every latency, busy ns, each round's
    figures; the judgements at the last look, why the rounds stopped, the window."""
    lat: dict = field(default_factory=lambda: {"a": array("q"), "b": array("q")})
    busy: dict = field(default_factory=lambda: {"a": 0, "b": 0})
    per_round: dict = field(default_factory=lambda: {"a": [], "b": []})
    judgements: list = field(default_factory=list)
    stopped: str = "max_rounds"
    warm_s: float = 0.0
    window: Window | None = None
    pairs: list = field(default_factory=list)   # with processes: each pair's pids and ratios

    def ratios(self, metrics, digits: int | None = None) -> dict:
        """What is judged: each round's ratio, or with processes each pair's (the geometric
        mean of its rounds' ratios)."""
        if not self.pairs:
            return round_ratios(self.per_round, metrics, digits)
        return {m: [_rounded(p["ratios"][m], digits) for p in self.pairs] for m in metrics}


def run_paired_cell(cell, cache, progress=None, cells: int = 1, rootdir=None) -> Result:
    """Measure a cell with `ab`: baseline and candidate interleaved; see the module doc.
    cells: how many paired cells the session judges (the Bonferroni family)."""
    plan = PairedPlan(cell, cells)
    a_side = make_baseline_side(cell, cache, rootdir)
    try:
        b_side = make_side(cell, cache)
    except BaseException:
        a_side.close()
        raise
    t_start = time.perf_counter()
    try:
        rounds = _measure_rounds(plan, a_side, b_side, progress, t_start)
        a_info = safe_info(a_side)
        described = Result(scenario=cell.workload.scenario, batch_size=cell.batch_size)
        b_side.describe(described)
    finally:
        a_side.close()
        b_side.close()
    result = candidate_result(plan, rounds, described, time.perf_counter() - t_start)
    result.ab = ab_figures(plan, rounds, a_info, a_side.errors)
    return judge_sides(plan, result, a_side, b_side, rounds)


def _measure_rounds(plan: PairedPlan, a_side, b_side, progress, t_start: float) -> Rounds:
    """Warm both sides, run one discarded round, then rounds inside the measured window
    until every metric is decided or the last look."""
    rounds = Rounds()
    drive, warmup = plan.drive, plan.cell.settings.warmup
    # a launched server keeps to its CPUs; the generator (this process) to the others
    client_cpus = next((s.client_cpus for s in (b_side, a_side)
                        if getattr(s, "client_cpus", None)), None)
    with pinned(client_cpus):
        t0 = time.perf_counter()
        a_side.warm(warmup)
        b_side.warm(warmup)
        rounds.warm_s = time.perf_counter() - t0
        discard = {"a": array("q"), "b": array("q")}
        run_round(a_side, b_side, -1, min(plan.k, 4), plan.sub if not drive.open_loop else
               min(plan.sub, 0.2), discard, drive)
        for side in (a_side, b_side):       # the discarded round's failures too
            side.errors = ErrorLog()
        drive.reset()
        with Window() as rounds.window:
            _rounds_until_decided(plan, a_side, b_side, rounds, progress, t_start)
    return rounds


def _rounds_until_decided(plan: PairedPlan, a_side, b_side, rounds: Rounds, progress,
                          t_start: float) -> None:
    n = 0
    for target in plan.looks:
        while n < target:
            record_round(plan, a_side, b_side, n, rounds)
            n += 1
            if progress is not None:
                progress(time.perf_counter() - t_start, len(rounds.lat["b"]), None)
        if plan.ab.reference:           # judged against its history, not against 1
            rounds.stopped = "reference"
            return
        rounds.judgements = judge(rounds.ratios(plan.metrics), plan.gate, len(plan.looks),
                                  plan.cells)
        if all(j.verdict != UNDETERMINED for j in rounds.judgements):
            rounds.stopped = "decided"
            return


def record_round(plan: PairedPlan, a_side, b_side, index: int, rounds: Rounds) -> None:
    """One round, its figures per side added to `rounds`."""
    got = {"a": array("q"), "b": array("q")}
    spent = run_round(a_side, b_side, index, plan.k, plan.sub, got, plan.drive)
    for side, side_obj in (("a", a_side), ("b", b_side)):
        arr = np.frombuffer(got[side], dtype=np.int64)
        rounds.per_round[side].append(round_metrics(arr, spent[side], side_obj.batch_size,
                                                    plan.metrics))
        rounds.lat[side].extend(got[side])
        rounds.busy[side] += spent[side]


def candidate_result(plan: PairedPlan, rounds: Rounds, described: Result, wall: float) -> Result:
    """The cell's result: the candidate's every query of every round."""
    cell, settings = plan.cell, plan.cell.settings
    lat_b = np.frombuffer(rounds.lat["b"], dtype=np.int64)
    result = _side_result(lat_b, rounds.busy["b"], cell, settings)
    for name in ("runtime", "model", "serving"):
        value = getattr(described, name, None)
        if value:
            setattr(result, name, value)
    result.stop = Stop(reason=f"paired_{rounds.stopped}", target_percentile=None,
                       ci_half_width_rel=None, ci_width=settings.ci_width)
    result.wall_s = round(wall, 6)
    result.window = rounds.window.bounds
    result.warmup = {"queries": None, "seconds": round(rounds.warm_s, 4)}
    result.process = rounds.window.process
    return result


def ab_figures(plan: PairedPlan, rounds: Rounds, a_info: dict, a_errors: ErrorLog,
               noise: dict | None = None) -> dict:
    """result.ab: the verdict, the baseline's summary, the rounds and their ratios."""
    cell, ab = plan.cell, plan.ab
    lat_a = np.frombuffer(rounds.lat["a"], dtype=np.int64)
    base = _side_result(lat_a, rounds.busy["a"], baseline_cell(cell), cell.settings)
    return {
        "verdict": None if ab.reference else cell_verdict(rounds.judgements),
        "reference": ab.reference or None,
        "baseline": {"changes": ab.baseline.label(), "model": a_info.get("model"),
                     "runtime": a_info.get("runtime"), "serving": a_info.get("serving"),
                     "process": a_info.get("process"),
                     **{k: a_info[k] for k in ("python", "versions", "url", "launch_s")
                        if k in a_info},
                     "latency_ms": base.latency_ms.model_dump(mode="json", exclude={"histogram"}),
                     "throughput": base.throughput.model_dump(mode="json"),
                     "errors": a_errors.to_json(len(lat_a))},
        "rounds": len(rounds.per_round["b"]), "looks": len(plan.looks), "look_at": plan.looks,
        "stopped": rounds.stopped, "cells": plan.cells, "slice_s": ab.slice,
        "switch_s": plan.sub, "sub_slices": plan.k, "gate": plan.gate.to_json(),
        "unit": "process pair" if rounds.pairs else "round",
        "ratios": rounds.ratios(plan.metrics, digits=6),
        "pairs": rounds.pairs or None,
        "noise": noise,
        "metrics": [j.to_json() for j in rounds.judgements],
    }


def judge_sides(plan: PairedPlan, result: Result, a_side, b_side, rounds: Rounds) -> Result:
    """Open-loop validity of both sides, then the error judgement of each: a failing
    baseline's ratios are no evidence."""
    settings = plan.cell.settings
    load = None
    if plan.drive.open_loop:
        load = plan.drive.load(b_side)
        result.ab["baseline"]["load"] = base_load = plan.drive.load(a_side)
        if not base_load["valid"]:
            load["invalid_reasons"] = load["invalid_reasons"] + [
                f"baseline: {r}" for r in base_load["invalid_reasons"]]
    finish(result, load, b_side.errors, settings, plan.cell.workload)
    if load is not None:
        result.valid = load["valid"] and result.ab["baseline"]["load"]["valid"]
    a_errors = result.ab["baseline"]["errors"]
    if result.status != "failed" and (a_errors["error_rate"] > settings.max_error_rate
                                      or not len(rounds.lat["a"])):
        first = a_side.errors.first() or "no successful query"
        result.status = "failed"
        result.reason = (f"baseline side: {first} ({100 * a_errors['error_rate']:.3g}% of its "
                         f"queries failed > max_error_rate {100 * settings.max_error_rate:g}%): "
                         f"its ratios are not evidence")
    return result


def safe_info(side) -> dict:
    try:
        return side.info()
    except Exception:  # noqa: BLE001 - informational only
        return {}


def run_round(a_side, b_side, index: int, k: int, sub: float, out: dict, drive=None) -> dict:
    """One round: k sub-slices per side, alternating A B B A ... (mirrored on odd rounds)."""
    drive = drive or ClosedLoopDrive()
    spent = {"a": 0, "b": 0}
    a_first = index % 2 == 0
    for j in range(k):
        first_a = a_first == (j % 2 == 0)
        order = (("a", a_side), ("b", b_side)) if first_a else (("b", b_side), ("a", a_side))
        for name, side in order:
            spent[name] += drive(side, sub, out[name], index, j)
    return spent


def _rounded(value, digits: int | None):
    return round(value, digits) if (value is not None and digits) else value


def round_ratios(per_round: dict, metrics, digits: int | None = None) -> dict:
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
    lines = [f"paired A/B regression after {measured(ab)} (candidate: this cell; "
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
            f"; {measured(ab)} vs {ab.get('baseline', {}).get('changes')}")


def measured(ab: dict) -> str:
    """What a paired cell measured: "10 rounds", or "3 pairs of fresh processes, 9 rounds"."""
    pairs = ab.get("pairs")
    rounds = f"{ab.get('rounds')} rounds"
    return f"{len(pairs)} pairs of fresh processes, {rounds}" if pairs else rounds


def baseline_cell(cell):
    """The candidate cell with the baseline's overrides applied."""
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
    if b.serving is not None:
        update["serving"] = b.serving
    return cell.model_copy(update={**update, "ab": None})


def _torch_thread_clash(a, b) -> str | None:
    torchy = ("torch", "torchscript", "torch_compile")
    in_process = a.serving.system == "inprocess" and b.serving.system == "inprocess"
    if in_process and a.runtime in torchy and b.runtime in torchy and a.threads != b.threads:
        return ("the two sides set different torch thread counts, and torch has one thread pool "
                "per process: run the baseline in its own process (ab.baseline.python: the "
                "same interpreter) or give both the same threads")
    return None


def make_side(cell, cache):
    """The side that measures this cell as written: in this process or behind its server."""
    if cell.serving.system == "inprocess":
        return LocalSide(cell, cache)
    return ServedSide(cell, cache)


def make_baseline_side(cell, cache, rootdir=None):
    b = cell.ab.baseline
    base = baseline_cell(cell)
    if b.python is not None or b.git is not None:
        return RemoteSide(base, cache, python=b.python, git=b.git, rootdir=rootdir)
    clash = _torch_thread_clash(base, cell)
    if clash:
        raise ValueError(clash)
    return make_side(base, cache)
