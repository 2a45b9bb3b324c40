"""How many times each cell is measured, where, and in what order.

A cell with `processes: N` (or --infer-processes N) is measured in N fresh worker processes;
--infer-repeat N measures every cell N times in the session's process. Either way the runs go
round-robin (every cell's first run, then every second, ...), so that they are spread over the
session and see its drift; with processes, each round in a shuffled order (randomised multiple
interleaved trials, Abedi & Brecht 2017), seeded so that every xdist worker collects the same.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# A saved baseline is the reference of every later comparison: unless the spec, the command
# line or --infer-repeat says otherwise, its cells are measured in this many fresh processes,
# so that the noise it keeps includes the process effect (benchmarks/gate_quality.py
# --processes measured the gate with it; docs/baselines-and-gating.md).
BASELINE_PROCESSES = 5


@dataclass(frozen=True)
class RunPlan:
    runs: int = 1          # how many runs of the cell
    fresh: bool = False    # each in a fresh worker process


def run_plan(cell, repeats: int, forced: int | None, default: int | None = None) -> RunPlan:
    """The plan for one cell: --infer-processes (`forced`), else the cell's `processes`,
    else `default` where repeats do not ask for the session's process; ValueError saying why
    a combination cannot be measured."""
    if forced is not None and forced < 1:
        raise ValueError(f"--infer-processes must be at least 1, got {forced}")
    processes = forced or cell.settings.processes or (default if repeats == 1 else None)
    where = f"{cell.spec}:{cell.line or 1}: {cell.id}"
    if cell.ab is not None:                 # its pairs of processes: run/paired.py
        paired_processes(cell, forced)
        return RunPlan(repeats, False)
    if processes is None or cell.search is not None:
        if cell.settings.processes is not None:    # written on the entry: say why not
            raise ValueError(f"{where}: `processes` does not apply to configuration "
                             f"searches, which measure their trials in the session's process")
        return RunPlan(repeats, False)
    if repeats > 1:
        raise ValueError(f"{where}: --infer-repeat {repeats} repeats in the session's process "
                         f"and `processes: {processes}` measures in fresh processes: use one "
                         f"of them (processes see the noise between processes as well)")
    return RunPlan(processes, True)


def paired_processes(cell, forced: int | None) -> int | None:
    """How many pairs of fresh processes a paired cell starts with (--infer-processes, else
    its `processes`; None: both sides in the session's process, rounds judged); ValueError
    where its sides cannot run in fresh processes."""
    sides = [cell.serving] + ([cell.ab.baseline.serving] if cell.ab.baseline.serving else [])
    fits = cell.workload.scenario_def.closed_loop and all(s.system == "inprocess"
                                                          for s in sides)
    where = f"{cell.spec}:{cell.line or 1}: {cell.id}"
    if cell.ab.reference:                   # both sides in one process, always
        if cell.settings.processes is not None:
            raise ValueError(f"{where}: `processes` on a reference pair (ab.reference) would "
                             f"put the reference in another process than the cell, so it "
                             f"could no longer cancel the process's speed: leave it out "
                             f"(--infer-processes leaves such cells in the session)")
        return None
    if cell.settings.processes is None:     # --infer-processes: the paired cells it fits
        if cell.ab.max_processes is not None and not forced:
            raise ValueError(f"{where}: ab.max_processes caps the pairs of fresh processes "
                             f"that `processes` starts: give `processes` too")
        processes = forced if forced and forced > 1 and fits else None
    else:
        processes = forced if forced and forced > 1 else cell.settings.processes
    if processes is None:
        return None
    if cell.ab.max_processes is not None and cell.ab.max_processes < processes:
        raise ValueError(f"{where}: ab.max_processes ({cell.ab.max_processes}) is below "
                         f"processes ({processes})")
    if not fits:
        raise ValueError(f"{where}: `processes` on a paired "
                         f"cell measures both sides in fresh in-process worker processes: "
                         f"it takes an in-process closed-loop cell, not "
                         f"{cell.workload.scenario} {cell.serving.label()}")
    if processes < 2:
        raise ValueError(f"{where}: a paired cell judges the "
                         f"spread between its pairs of processes: `processes` of at least 2")
    return processes


def interleave(items: list, plans: list[RunPlan]) -> list[tuple[object, int, RunPlan]]:
    """(item, run number, its plan) in the order to run them: round-robin, shuffled per
    round when any cell runs in fresh processes."""
    shuffle = any(p.fresh for p in plans)
    out = []
    for k in range(1, max((p.runs for p in plans), default=0) + 1):
        batch = [(item, k, plan) for item, plan in zip(items, plans) if plan.runs >= k]
        if shuffle:
            random.Random(k).shuffle(batch)
        out.extend(batch)
    return out
