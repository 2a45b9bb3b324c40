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
    trials = _Trials(plan, search_id, cache, progress, servers, rootdir, per_hour,
                     host or socket.gethostname())
    outcome = run_search(Space(plan.dims, [c.params for c in plan.candidates]), trials.evaluate,
                         direction=spec.direction, trials=plan.trials,
                         seconds=spec.budget.time, seed=spec.seed, patience=spec.patience,
                         sampler=spec.sampler, excluded=set(trials.excluded),
                         prune=spec.objective == "capacity")
    summary = answer(plan, outcome, trials.results, trials.excluded, trials.ids)
    extra = []
    if (spec.confirm == "paired" and summary["runner_up"] is not None
            and not summary["distinguishable"]):
        extra = _confirm(plan, summary, search_id, cache, progress, servers, rootdir)
    main = _search_result(summary, trials.results, search_id)
    return [main] + [trials.results[n] for n in sorted(trials.results)] + extra


def _unavailable_here(candidates) -> dict[int, str]:
    """Candidates this machine cannot run (index -> why); none at all is an error."""
    excluded = {i: why for i, cand in enumerate(candidates)
                if (why := why_unavailable(cand.cell))}
    if len(excluded) == len(candidates):
        reasons = sorted(set(excluded.values()))
        raise RuntimeUnavailable(f"none of the {len(candidates)} configurations can run here: "
                                 + "; ".join(reasons[:3]))
    return excluded


class _Trials:
    """The optimiser's callback: measure one candidate as the plain cell it stands for, keep
    its result (numbered in the order measured), and score it."""

    def __init__(self, plan, search_id, cache, progress, servers, rootdir, per_hour, host):
        self.plan, self.search_id, self.cache = plan, search_id, cache
        self.progress, self.servers, self.rootdir = progress, servers, rootdir
        self.per_hour, self.host = per_hour, host
        self.excluded = _unavailable_here(plan.candidates)
        self.results: dict[int, Result] = {}
        self.ids: dict[int, str] = {}
        self.calls: list[int] = []

    def evaluate(self, index: int, floor: float | None) -> Score:
        number = len(self.calls)
        self.calls.append(index)
        cand = self.plan.candidates[index].cell
        if self.progress is not None and hasattr(self.progress, "prefix"):
            self.progress.prefix = f"trial {number + 1}/{self.plan.trials} "
        try:
            result = self._measure(cand, floor)
        except RuntimeUnavailable as exc:
            self.excluded[index] = str(exc)
            return Score(state="unavailable", note=str(exc))
        result.id = f"{self.search_id}::{cand.id}"
        result.cell = cand.model_dump(mode="json")
        result.search_trial = {"search": self.search_id, "number": number}
        self.results[number] = result
        self.ids[number] = result.id
        return score_result(self.plan.spec, cand, result, self.per_hour, self.host)

    def _measure(self, cand, floor: float | None) -> Result:
        """The cell's Result; a failure is a failed Result (one failing trial must not end
        the search), except RuntimeUnavailable, which excludes the candidate."""
        capacity = self.plan.spec.objective == "capacity"
        floor_q = floor / cand.batch_size if floor and capacity else None
        try:
            with prune_below(floor_q):
                return run_cell(cand, self.cache, self.progress, self.servers,
                                rootdir=self.rootdir)
        except RuntimeUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - one failing trial must not end the search
            return _failed(cand, exc)
        finally:
            if self.progress is not None:
                self.progress.clear()


def _failed(cand, exc: Exception) -> Result:
    recorded = exc.recorded if isinstance(exc, CellStepError) else {}
    text = str(exc).strip()
    reason = str(exc) if isinstance(exc, CellStepError) else (
        f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
    return Result(status="failed", reason=reason, model={"label": cand.model_label, **recorded})


def _confirm(plan, summary: dict, search_id: str, cache, progress, servers,
             rootdir) -> list[Result]:
    """The paired tie-break of the top two (into `summary`); its result, when measured, is
    kept like a trial's."""
    summary["confirmation"], paired = confirm_top_two(plan, summary, cache, progress,
                                                      servers, rootdir)
    summary["verdict"] = verdict_text(summary)
    if paired is None:
        return []
    paired.id = f"{search_id}::paired-confirmation"
    paired.cell = None
    paired.search_trial = {"search": search_id, "confirmation": True}
    return [paired]


def _search_result(summary: dict, results: dict[int, Result], search_id: str) -> Result:
    """The search's own result: the winner's measurement with the answer in `search`."""
    if summary["winner"] is not None:
        main = results[summary["winner"]].model_copy(deep=True)
        main.reason = None
    else:
        main = Result(status="failed", reason=f"the search found no configuration: "
                                              f"{summary['verdict']}")
    main.id, main.cell, main.search_trial, main.search = search_id, None, None, summary
    return main
