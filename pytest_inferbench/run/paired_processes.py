"""Paired mode across fresh processes (`processes: P` on an `ab` cell): each pair of rounds'
sides in two fresh interpreters, judged on the pairs' ratios.

Why: a process has its own speed (where its threads and pages landed, address-space and hash
randomisation, what the allocator did first). Two sides in one process share its luck, and a
baseline in another interpreter has its own: rounds inside that one pair cannot tell the
processes' speeds from the sides'. Pairs of fresh processes make the process effect part of
the noise the verdict is judged against (pyperf's and JMH's fresh workers, applied to a pair).

Each pair: both interpreters start at once (run/remote.py's RemoteSide, the baseline's own
`python`/`git` where given, each with INFERBENCH_PROCESS=k/N); both warm up; one round is
discarded; then `rounds` rounds alternate the sides as in-session pairs do (run/paired.py),
the side that leads alternating from pair to pair in a seeded random order. The pair's ratio
of a metric is the geometric mean of its rounds' ratios; P pairs first, then more (doubling,
up to ab.max_processes) while undecided, the error rate split over the looks. The result's
`ab` keeps each pair and the split of the log ratios into the rounds' and the pairs' parts.
"""

from __future__ import annotations

import math
import random
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..core.noise import split
from ..core.result import Result
from ..core.verdicts import UNDETERMINED, judge
from ..workload.engine import Window
from ..workload.failures import ErrorLog
from .paired import (PairedPlan, Rounds, ab_figures, baseline_cell, candidate_result,
                     judge_sides, record_round, round_ratios, run_round, safe_info)
from .remote import PROCESS_ENV, RemoteSide


@dataclass
class _Tally:
    """One side's failed queries over every pair (its processes come and go)."""
    errors: ErrorLog = field(default_factory=ErrorLog)


class _Pairs:
    """What the pairs measured so far: the rounds, each pair's window, both sides' failures,
    the baseline's info and the candidate's description (from the first pair)."""

    def __init__(self, plan: PairedPlan, cache, rootdir):
        self.plan, self.cache, self.rootdir = plan, cache, rootdir
        self.rounds = Rounds(stopped="max_processes")
        self.described = Result(scenario=plan.cell.workload.scenario,
                                batch_size=plan.cell.batch_size)
        self.tallies = {"a": _Tally(), "b": _Tally()}
        self.a_info: dict = {}
        self.windows: list[Window] = []

    def add(self) -> None:
        """Start, measure and close the next pair of processes."""
        n = len(self.windows)
        a_side, b_side = _start_pair(self.plan, self.cache, self.rootdir, n)
        try:
            self.windows.append(_measure_pair(self.plan, a_side, b_side, n, self.rounds))
            self.a_info = self.a_info or safe_info(a_side)
            if n == 0:
                b_side.describe(self.described)
        finally:
            a_side.close()
            b_side.close()
        for side, obj in (("a", a_side), ("b", b_side)):
            self.tallies[side].errors.merge(obj.errors)


def run_process_pairs(cell, cache, progress=None, cells: int = 1, rootdir=None) -> Result:
    """Measure a paired cell in pairs of fresh processes; see the module doc. cells: how many
    paired cells the session judges (the Bonferroni family)."""
    plan, t_start = PairedPlan(cell, cells), time.perf_counter()
    pairs = _Pairs(plan, cache, rootdir)
    rounds = pairs.rounds
    for target in plan.looks:
        while len(pairs.windows) < target:
            pairs.add()
            if progress is not None:
                progress(time.perf_counter() - t_start, len(rounds.lat["b"]), None)
        rounds.judgements = judge(rounds.ratios(plan.metrics), plan.gate, len(plan.looks),
                                  plan.cells, unit="process pair")
        if all(j.verdict != UNDETERMINED for j in rounds.judgements):
            rounds.stopped = "decided"
            break
    rounds.window = _widest(pairs.windows)
    result = candidate_result(plan, rounds, pairs.described, time.perf_counter() - t_start)
    result.ab = ab_figures(plan, rounds, pairs.a_info, pairs.tallies["a"].errors,
                           noise=_pair_noise(plan, rounds))
    return judge_sides(plan, result, pairs.tallies["a"], pairs.tallies["b"], rounds)


def _start_pair(plan: PairedPlan, cache, rootdir, n: int):
    """Pair n's two fresh interpreters, started at once (their start-up is not measured),
    each told which process it is (INFERBENCH_PROCESS)."""
    cell, b = plan.cell, plan.cell.ab.baseline
    env = {PROCESS_ENV: f"{n + 1}/{plan.looks[-1]}"}
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(RemoteSide, baseline_cell(cell), cache, python=b.python,
                               git=b.git, rootdir=rootdir, role="baseline", env=env),
                   pool.submit(RemoteSide, cell, cache, role="candidate", env=env)]
    failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:
        for f in futures:
            if f.exception() is None:
                f.result().close()
        raise failed[0]
    return [f.result() for f in futures]


def _measure_pair(plan: PairedPlan, a_side, b_side, n: int, rounds: Rounds) -> Window:
    """Warm both, one discarded round, then `rounds` rounds (which side leads alternates
    from pair to pair, at random: ABBA at the level of processes too); the pair's ratio of a
    metric is the geometric mean of its rounds' ratios."""
    lead = random.Random(plan.cell.settings.seed * 7919 + n).randrange(2)
    a_side.warm(plan.cell.settings.warmup)
    b_side.warm(plan.cell.settings.warmup)
    run_round(a_side, b_side, lead - 1, min(plan.k, 4), plan.sub, {"a": array("q"),
                                                                "b": array("q")}, plan.drive)
    for side in (a_side, b_side):
        side.errors = ErrorLog()
    first = len(rounds.per_round["b"])
    with Window() as window:
        for r in range(plan.ab.rounds):
            record_round(plan, a_side, b_side, lead + r, rounds)
    mine = {side: rounds.per_round[side][first:] for side in ("a", "b")}
    ratios = round_ratios(mine, plan.metrics)
    rounds.pairs.append({
        "pids": {"a": a_side.info().get("pid"), "b": b_side.info().get("pid")},
        "rounds": plan.ab.rounds, "lead": "a" if lead == 0 else "b",
        "ratios": {m: _geomean(v) for m, v in ratios.items()},
        "log_sd": {m: _log_sd(v) for m, v in ratios.items()}})
    return window


def _geomean(values) -> float | None:
    x = [math.log(v) for v in values if v]
    return math.exp(sum(x) / len(x)) if x else None


def _log_sd(values) -> float | None:
    x = [math.log(v) for v in values if v]
    return float(np.std(x, ddof=1)) if len(x) > 1 else None


def _widest(windows: list[Window]) -> Window:
    """One window for the result: from the first pair's start to the last's end, with the
    busiest pair's process figures (a host busy during any pair is a host busy)."""
    out = windows[0]
    busiest = max(windows, key=lambda w: (w.process or {}).get("other_cpu_cores") or 0.0)
    out.end, out.process = windows[-1].end, busiest.process
    return out


def _pair_noise(plan: PairedPlan, rounds: Rounds) -> dict | None:
    """With processes: each metric's log-ratio spread split into the rounds' part (within a
    pair) and the processes' part (between pairs), core/noise.py's split."""
    if len(rounds.pairs) < 2:
        return None
    out = {}
    for m in plan.metrics:
        values = [p["ratios"][m] for p in rounds.pairs]
        se = [p["log_sd"][m] / math.sqrt(p["rounds"]) if p["log_sd"][m] is not None else None
              for p in rounds.pairs]
        got = split(values, se, plan.gate.confidence)
        if got is not None:
            out[m] = got.to_json()
    return out or None
