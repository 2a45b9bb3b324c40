"""Configuration search (`search:` in a benchmark entry): the entry's lists are the search
space instead of a matrix, and the entry becomes one item that measures as few of its
configurations as it needs to find the best under the objective.

    - model: resnet-tiny
      runtime: [onnxruntime, torch]
      batch_size: [1, 4, 16]
      serving: [inprocess, {system: triton, instances: [1, 2]}]
      workload: {scenario: capacity, slo: {p99: 50ms}, rate: 50}
      search: {objective: capacity, budget: {trials: 6, time: 20m}, seed: 0}

Here: the schema, the dimensions of the space (read off the candidates the matrix expands
to, so include/exclude shape it), and the checks made when the spec is loaded. The search
itself runs in optimize/.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..core.capacity_plan import DEFAULT_START, step_queries
from ..core.scenarios import scenario
from .settings import Duration

LATENCY_OBJECTIVE = re.compile(r"^p(\d+(\.\d+)?)$")
OBJECTIVES = ("capacity", "throughput", "cost_per_million")   # or a latency percentile: p99
SAMPLERS = ("gp", "tpe", "random")
DEFAULT_SHARE = 0.15        # the default budget: 15% of the configurations (at least 4)
MIN_TRIALS = 2              # one trial is a measurement, not a search


class SearchBudget(BaseModel):
    """How much the search may measure: at most `trials` configurations and `time` seconds
    of wall time (a trial under way when time runs out finishes and counts)."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    trials: int | None = Field(None, ge=1)
    time: Duration | None = Field(None, gt=0)


class SearchSpec(BaseModel):
    """`search:` of a benchmark entry."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    objective: str
    budget: SearchBudget = SearchBudget()
    seed: int = 0
    # stop after this many measured trials without a better objective; null: never
    patience: int | None = Field(8, ge=1)
    # Optuna's GPSampler by default (see optimize/optimizer.py for why); tpe, random to compare
    sampler: Literal[SAMPLERS] = "gp"
    confirm: Literal["paired"] | None = None    # a paired A/B of the top two when they tie

    @property
    def direction(self) -> str:
        return "maximize" if self.objective in ("capacity", "throughput") else "minimize"

    @property
    def latency_percentile(self) -> float | None:
        m = LATENCY_OBJECTIVE.match(self.objective)
        return float(m.group(1)) if m else None

    def unit(self) -> str:
        if self.objective in ("capacity", "throughput"):
            return "samples/s"
        if self.objective == "cost_per_million":
            return "per million samples"
        return "ms"


class SearchDim(BaseModel):
    """One dimension of the space: an axis, or a knob inside an axis' mapping
    (`serving.instances`); ordinal when every choice is a number."""
    model_config = ConfigDict(frozen=True)
    name: str
    choices: tuple[Any, ...]
    ordinal: bool


def flat_config(cell: dict) -> dict[str, Any]:
    """A candidate's configuration as flat `axis` / `axis.knob` keys (from its cell's
    fields), the coordinates the search space is made of."""
    out: dict[str, Any] = {}
    runtime = {"name": cell["runtime"], **(cell.get("runtime_options") or {})}
    fields = {"model": cell.get("model"), "runtime": runtime, "device": cell["device"],
              "precision": cell["precision"], "batch_size": cell["batch_size"],
              "threads": cell.get("threads"), "workload": cell["workload"],
              "serving": cell["serving"]}
    for axis, value in fields.items():
        _flatten(out, axis, value)
    return out


def _flatten(out, prefix, value):
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(out, f"{prefix}.{key}", inner)
    else:
        out[prefix] = value


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def search_dims(configs: list[dict[str, Any]]) -> tuple[SearchDim, ...]:
    """The coordinates that differ between candidates, each with its choices (sorted numbers
    for an ordinal one, first-seen order for a categorical one)."""
    keys: list[str] = []
    for config in configs:
        keys.extend(k for k in config if k not in keys)
    dims = []
    for key in keys:
        values = [config.get(key) for config in configs]
        distinct = []
        for v in values:
            if _canon(v) not in {_canon(d) for d in distinct}:
                distinct.append(v)
        if len(distinct) < 2:
            continue
        ordinal = all(_number(v) for v in distinct)
        choices = tuple(sorted(distinct)) if ordinal else tuple(distinct)
        dims.append(SearchDim(name=_short(key), choices=choices, ordinal=ordinal))
    return tuple(dims)


def _short(key: str) -> str:
    """`runtime.name` reads as `runtime`, `serving.system` as `serving`."""
    for axis, main in (("runtime", "name"), ("serving", "system"), ("workload", "scenario")):
        if key == f"{axis}.{main}":
            return axis
    return key


def dim_values(config: dict[str, Any], dims) -> dict[str, Any]:
    """A candidate's value on each dimension."""
    long = {_short(k): v for k, v in config.items()}
    return {d.name: long.get(d.name) for d in dims}


def _canon(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def default_trials(grid: int) -> int:
    return min(grid, max(4, math.ceil(DEFAULT_SHARE * grid)))


def objective_problem(spec: SearchSpec, cells: list[dict], cost) -> tuple[str, tuple] | None:
    """(message, field under `search`) when the objective cannot be measured on these
    candidates, or None."""
    objective = spec.objective
    scenarios = sorted({c["workload"].scenario for c in cells})
    pct = spec.latency_percentile
    if objective not in OBJECTIVES and pct is None:
        return (f"unknown objective {objective!r}; expected capacity (the highest rate that "
                f"meets the workload's slo), throughput, cost_per_million or a latency "
                f"percentile such as p99", ("objective",))
    kinds = [scenario(name) for name in scenarios]
    if objective == "capacity":
        if not (kinds and all(k.finds_capacity for k in kinds)):
            return ("objective capacity is the highest rate that meets the workload's SLO, "
                    "found by a capacity search per trial: it needs `workload: {scenario: "
                    "capacity, slo: {p99: 50ms}, rate: 50}` (the SLO and a starting rate); "
                    f"this entry's scenario is {', '.join(scenarios)}", ("objective",))
        return None
    if any(k.rate_search for k in kinds):
        return (f"objective {objective} is measured at the workload's own load, and a "
                f"{scenarios[0]} workload searches rates: use objective capacity, or an "
                f"offline, single_stream, concurrency or server workload", ("objective",))
    if objective in ("throughput", "cost_per_million") and any(k.fixed_rate for k in kinds):
        return ("the server scenario offers a fixed rate, so every trial's throughput is that "
                "rate: search objective capacity (`workload: {scenario: capacity, slo: "
                "...}`) or a latency percentile", ("objective",))
    if pct is not None:
        for c in cells:
            if pct not in c["settings"].percentiles:
                have = ", ".join(f"p{p:g}" for p in c["settings"].percentiles)
                return (f"objective {objective} is not among the percentiles measured ({have}): "
                        f"add {pct:g} to `percentiles`", ("objective",))
    if objective == "cost_per_million":
        prices = (cost.per_hour if cost is not None else {}) or {}
        for c in cells:
            device = c["device"]
            if device not in prices and device.split(":")[0] not in prices and not any(
                    not re.match(r"^(cpu|cuda(:\d+)?)$", k) for k in prices):
                return (f"objective cost_per_million needs a price per hour for device "
                        f"{device}: add `cost: {{per_hour: {{{device.split(':')[0]}: 0.40}}}}` "
                        f"to the job file", ("objective",))
    return None


def trial_floor_s(cell: dict) -> float:
    """The least wall time one trial of this candidate takes: its warm-up and minimum
    duration, or a capacity search's first step (the queries its verdict needs)."""
    settings, workload = cell["settings"], cell["workload"]
    warm = settings.warmup if isinstance(settings.warmup, float) else 0.0
    if workload.scenario_def.rate_search:
        rate = workload.rate or DEFAULT_START
        return warm + max(workload.step_min_duration, step_queries(workload) / rate)
    return warm + settings.min_duration


def confirm_problem(spec: SearchSpec) -> str | None:
    if spec.confirm == "paired" and spec.objective == "cost_per_million":
        return ("confirm: paired compares latency and throughput side by side; for "
                "cost_per_million use objective throughput (cost is throughput times a price)")
    return None
