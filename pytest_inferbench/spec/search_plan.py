"""A search entry's cells -> one search cell: the candidates (each a Cell with its own id),
the space's dimensions, the budget resolved, and the spec errors a search can have (file,
line and field under `search`)."""

from __future__ import annotations

import math

from pydantic import BaseModel

from .cell import Cell, SearchCandidate, SearchPlan
from .document import Document, check_keys
from .families import PRESETS
from .search import (
    MIN_TRIALS,
    SearchSpec,
    confirm_problem,
    default_trials,
    dim_values,
    flat_config,
    objective_problem,
    search_dims,
    trial_floor_s,
)

ENTRY_AXES = ("model", "runtime", "device", "precision", "batch_size", "threads", "workload",
              "serving")


def search_cell(doc: Document, entry: dict, path, cells: list[dict], cost) -> dict:
    """The one cell a `search:` entry becomes (its candidates inside)."""
    spath = path + ("search",)
    raw = entry["search"]
    if isinstance(raw, str):
        raw = {"objective": raw}
    check_keys(doc, raw, tuple(SearchSpec.model_fields), spath, "search")
    if "objective" not in raw:
        raise doc.error("a search needs an `objective`: capacity, throughput, "
                        "cost_per_million or a latency percentile (p99)", spath)
    spec = doc.validate(SearchSpec, raw, spath)
    if entry.get("ab") is not None:
        raise doc.error("a search entry cannot also be paired (`ab`): `search: {confirm: "
                        "paired}` pairs the two best configurations it finds", path + ("ab",))
    problem = objective_problem(spec, cells, cost)
    if problem:
        raise doc.error(problem[0], spath + problem[1])
    problem = confirm_problem(spec)
    if problem:
        raise doc.error(problem, spath + ("confirm",))
    configs = [flat_config(c) for c in cells]
    dims = search_dims(configs)
    if not dims:
        raise doc.error("nothing to search: this entry has one configuration. Write the axes "
                        "to search as lists (batch_size: [1, 4, 16], serving: {system: triton, "
                        "instances: [1, 2]})", spath)
    grid = len(cells)
    budget = spec.budget
    trials = budget.trials if budget.trials is not None else default_trials(grid)
    if trials < MIN_TRIALS:
        raise doc.error(f"a budget of {trials} trial measures one configuration, which is not "
                        f"a search: give at least {MIN_TRIALS} (the default is 15% of the "
                        f"{grid} configurations)", spath + ("budget", "trials"))
    trials = min(trials, grid)
    floor = min(trial_floor_s(c) for c in cells)
    if budget.time is not None and budget.time < floor:
        raise doc.error(f"a time budget of {budget.time:g}s is shorter than one trial: each "
                        f"takes at least {floor:.3g}s (warm-up and minimum duration, or a "
                        f"capacity search's first step)", spath + ("budget", "time"))
    candidates, seen = [], {}
    for raw_cell, config in zip(cells, configs):
        probe = Cell.model_construct(**raw_cell)
        base = f"{raw_cell['model_label']}[{probe.params_label()}]"
        seen[base] = seen.get(base, 0) + 1
        cid = base if seen[base] == 1 else f"{base[:-1]}#{seen[base]}]"
        cell = Cell(id=cid, **raw_cell)
        candidates.append(SearchCandidate(params=dim_values(config, dims),
                                          entry=candidate_entry(entry, cell, dims), cell=cell))
    plan = SearchPlan(spec=spec, dims=dims, grid=grid, trials=trials,
                      candidates=tuple(candidates))
    labels = list(dict.fromkeys(c["model_label"] for c in cells))
    label = entry.get("name") or ("|".join(labels) if len(labels) <= 3
                                  else f"{labels[0]}+{len(labels) - 1} models")
    # the item is placed and leased as its first GPU candidate (its CPU trials run there too)
    base = next((c for c in cells if c["device"] != "cpu"), cells[0])
    return {**base, "search": plan, "model_label": str(label)}


def candidate_entry(entry: dict, cell: Cell, dims) -> dict:
    """The benchmark entry that measures this one configuration as a plain cell: the entry as
    written, without `search`, each searched axis set to this candidate's value."""
    searched = {d.name.split(".")[0] for d in dims}
    out = {k: v for k, v in entry.items() if k not in ("search", "include", "exclude")}
    for axis in ENTRY_AXES:
        if axis in searched or (axis in out and isinstance(out[axis], list)):
            out[axis] = _written(axis, cell)
    return out


def _written(axis: str, cell: Cell):
    if axis == "model":
        if cell.model_label in PRESETS:
            return cell.model_label
        full = cell.model.model_dump(mode="json")
        short = cell.model.model_dump(mode="json", exclude_defaults=True)
        for key in ("family",):
            if key in full:
                short = {key: full[key], **short}
        return short
    if axis == "runtime":
        return {"name": cell.runtime, **cell.runtime_options} if cell.runtime_options \
            else cell.runtime
    value = getattr(cell, axis)
    if axis == "threads" and value is not None and value.inter is None:
        return value.intra
    if not isinstance(value, BaseModel):
        return value
    dumped = value.model_dump(mode="json", exclude_defaults=True)
    main = {"workload": "scenario", "serving": "system"}.get(axis)
    if main is not None:
        dumped = {main: getattr(value, main), **dumped}
        if list(dumped) == [main]:
            return dumped[main]
    return _plain(dumped)


def _plain(value):
    """Floats that are whole numbers written as integers (YAML reads them back the same)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer() and not math.isinf(value):
        return int(value)
    return value
