"""`search: {confirm: paired}`: when the two best configurations' intervals overlap, measure
them interleaved in paired mode (run/paired.py; the runner-up is the baseline side, the
winner the candidate), so both see the same machine. A capacity search's pair is run in the
server scenario at the highest rate both proved to meet the SLO, and judged on latency
there; throughput and latency objectives keep their own scenario.

Paired mode changes what a baseline side can change (model, runtime, precision, threads,
serving): two configurations that differ in batch size or device cannot be paired, and
the answer says so instead."""

from __future__ import annotations

from ..run.cell import run_cell
from ..run.paired import summary_line
from ..spec import ABBaseline, ABSpec, Workload

PAIRABLE = ("model", "runtime", "precision", "threads", "serving")


def pair_problem(winner, runner_up, workload) -> str | None:
    for axis in ("batch_size", "device"):
        if getattr(winner, axis) != getattr(runner_up, axis):
            return (f"the two differ in {axis.replace('_', ' ')} ({getattr(winner, axis)} vs "
                    f"{getattr(runner_up, axis)}), which a paired baseline cannot change")
    kind = workload.scenario_def
    if not kind.paired:
        return f"paired mode does not measure the {workload.scenario} scenario"
    if kind.closed_loop and any(
            c.serving.system == "inprocess" and c.serving.instances != 1
            for c in (winner, runner_up)):
        return ("paired mode runs closed-loop scenarios with one caller, and one of the two "
                "has several in-process instances")
    return None


def paired_workload(summary, trials, winner) -> Workload:
    if not winner.workload.scenario_def.rate_search:
        return winner.workload
    rates = [trials[n]["lower"] / winner.batch_size for n in (summary["winner"],
                                                              summary["runner_up"])]
    fields = winner.workload.model_dump(include={"slo", "timeout", "send_lag_bound"})
    return Workload(scenario="server", arrival="poisson", rate=round(min(rates), 3), **fields)


def confirm_top_two(plan, summary, cache, progress=None, servers=None, rootdir=None):
    """(what the paired A/B found, its Result or None)."""
    trials = {t["number"]: t for t in summary["trials"]}
    w_trial, r_trial = trials[summary["winner"]], trials[summary["runner_up"]]
    by_id = {c.cell.id: c.cell for c in plan.candidates}
    winner, runner_up = by_id[w_trial["cell_id"]], by_id[r_trial["cell_id"]]
    workload = paired_workload(summary, trials, winner)
    problem = pair_problem(winner, runner_up, workload)
    if problem:
        return {"ran": False, "why": problem}, None
    changes = {}
    for axis in PAIRABLE:
        if getattr(winner, axis) != getattr(runner_up, axis):
            changes[axis] = getattr(runner_up, axis)
    if winner.model != runner_up.model:
        changes["model_label"] = runner_up.model_label
    if winner.runtime != runner_up.runtime or winner.runtime_options != runner_up.runtime_options:
        changes["runtime"] = runner_up.runtime
        changes["runtime_options"] = runner_up.runtime_options
    ab = ABSpec(baseline=ABBaseline(**changes))
    cell = winner.model_copy(update={"ab": ab, "workload": workload, "search": None})
    try:
        result = run_cell(cell, cache, progress, servers, rootdir=rootdir)
    except Exception as exc:  # noqa: BLE001 - the search's answer stands without it
        return {"ran": False, "why": f"the paired A/B failed: {type(exc).__name__}: {exc}"}, None
    finally:
        if progress is not None:
            progress.clear()
    found = result.ab
    verdict = found.verdict if found is not None else None
    meaning = {"improvement": "the winner is better", "regression": "the runner-up is better",
               }.get(verdict, "no difference found")
    # run/paired.summary_line reads the ab section dict-style (declared keys only)
    return {"ran": True, "workload": workload.label(), "verdict": verdict, "meaning": meaning,
            "summary": summary_line(found if found is not None else {}),
            "rounds": found.rounds if found is not None else None,
            "candidate": winner.id, "baseline": runner_up.id}, result
