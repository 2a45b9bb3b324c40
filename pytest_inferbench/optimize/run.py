"""A search cell: exclude the candidates this machine cannot run, let the optimiser pick
trials, measure each exactly as the plain cell it stands for (run/cell.run_cell; a capacity
trial is a capacity search, pruned once it proves itself below the best so far), and return
the search's own result (the winner's measurement with the answer in `search`) followed by
every trial's result, each with its own cell, so nothing measured is lost."""

from __future__ import annotations

import socket

from ..core.errors import CellStepError, RuntimeUnavailable
from ..core.result import Result
from ..run.available import why_unavailable
from ..run.cell import run_cell
from ..workload.rate_search import prune_below
from .answer import answer, verdict_text
from .confirm import confirm_top_two
from .objective import score_result
from .optimizer import Score, run_search
from .space import Space


def run_search_cell(cell, cache, search_id: str, progress=None, servers=None, rootdir=None,
                    per_hour: dict | None = None, host: str | None = None) -> list[Result]:
    plan = cell.search
    spec = plan.spec
    candidates = plan.candidates
    excluded = {}
    for i, cand in enumerate(candidates):
        why = why_unavailable(cand.cell)
        if why:
            excluded[i] = why
    if len(excluded) == len(candidates):
        reasons = sorted(set(excluded.values()))
        raise RuntimeUnavailable(f"none of the {len(candidates)} configurations can run here: "
                                 + "; ".join(reasons[:3]))
    results: dict[int, Result] = {}
    ids: dict[int, str] = {}
    calls = []

    def evaluate(index: int, floor: float | None) -> Score:
        number = len(calls)
        calls.append(index)
        cand = candidates[index].cell
        if progress is not None and hasattr(progress, "prefix"):
            progress.prefix = f"trial {number + 1}/{plan.trials} "
        floor_q = floor / cand.batch_size if floor and spec.objective == "capacity" else None
        try:
            with prune_below(floor_q):
                result = run_cell(cand, cache, progress, servers, rootdir=rootdir)
        except RuntimeUnavailable as exc:
            excluded[index] = str(exc)
            return Score(state="unavailable", note=str(exc))
        except Exception as exc:  # noqa: BLE001 - one failing trial must not end the search
            recorded = exc.recorded if isinstance(exc, CellStepError) else {}
            text = str(exc).strip()
            reason = str(exc) if isinstance(exc, CellStepError) else (
                f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
            result = Result(status="failed", reason=reason,
                            model={"label": cand.model_label, **recorded})
        finally:
            if progress is not None:
                progress.clear()
        result.id = f"{search_id}::{cand.id}"
        result.cell = cand.model_dump(mode="json")
        result.search_trial = {"search": search_id, "number": number}
        results[number] = result
        ids[number] = result.id
        return score_result(spec, cand, result, per_hour, host or socket.gethostname())

    outcome = run_search(Space(plan.dims, [c.params for c in candidates]), evaluate,
                         direction=spec.direction, trials=plan.trials,
                         seconds=spec.budget.time, seed=spec.seed, patience=spec.patience,
                         sampler=spec.sampler, excluded=set(excluded),
                         prune=spec.objective == "capacity")
    summary = answer(plan, outcome, results, excluded, ids)
    extra = []
    if (spec.confirm == "paired" and summary["runner_up"] is not None
            and not summary["distinguishable"]):
        summary["confirmation"], paired = confirm_top_two(plan, summary, cache, progress,
                                                          servers, rootdir)
        summary["verdict"] = verdict_text(summary)
        if paired is not None:      # measured: kept like a trial
            paired.id = f"{search_id}::paired-confirmation"
            paired.cell = None
            paired.search_trial = {"search": search_id, "confirmation": True}
            extra.append(paired)
    if summary["winner"] is not None:
        main = results[summary["winner"]].model_copy(deep=True)
        main.reason = None
    else:
        main = Result(status="failed", reason=f"the search found no configuration: "
                                              f"{summary['verdict']}")
    main.id, main.cell, main.search_trial, main.search = search_id, None, None, summary
    return [main] + [results[n] for n in sorted(results)] + extra
