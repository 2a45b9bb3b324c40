"""One benchmark: a point of the matrix, fully resolved, frozen and plain JSON through
model_dump(). Everything below the spec (models, runtimes, serving, workloads, run/) reads it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .ab import ABSpec
from .followers import Placement
from .gate import Gate
from .model import CheckSpec, ModelSpec
from .runtime import RuntimeSpec, Threads
from .search import SearchDim, SearchSpec
from .serving import Serving
from .settings import Settings
from .workload import Workload


class Cell(BaseModel):
    """One benchmark: a point of the matrix, fully resolved. Plain JSON through model_dump()."""
    model_config = ConfigDict(frozen=True)
    id: str
    spec: str
    spec_name: str
    entry: int
    line: int | None = None
    model: ModelSpec | None        # None: an endpoint benchmarked from its metadata alone
    model_label: str
    runtime: str
    runtime_options: dict[str, Any] = {}
    device: str
    precision: str
    batch_size: int
    threads: Threads | None = None
    workload: Workload
    serving: Serving
    settings: Settings
    marks: tuple[str, ...] = ()
    gate: Gate | None = None        # job < spec < entry gate, merged key by key
    ab: ABSpec | None = None        # paired mode
    placement: Placement | None = None  # where it may run (not part of the id)
    check: CheckSpec | None = None  # the numerical check's tolerance, when the entry sets it
    search: "SearchPlan | None" = None  # configuration search: one item, many candidates

    def params_label(self) -> str:
        if self.search is not None:
            return f"search({self.search.spec.objective},{self.search.grid} configs)"
        runtime = RuntimeSpec(name=self.runtime, **self.runtime_options).label()
        parts = [runtime, self.device, self.precision, f"bs{self.batch_size}"]
        if self.model is None:      # an endpoint without a source model: the server decides
            parts = [f"bs{self.batch_size}"]
        if self.serving.system == "openai":    # generative: no runtime or batch size to name
            parts = [self.device] if self.model is not None else []
        if self.threads is not None:
            parts.append(self.threads.label())
        parts.append(self.workload.label())
        if self.serving.label() != "inprocess":
            parts.append(self.serving.label())
        return "-".join(parts)


class SearchCandidate(BaseModel):
    """One configuration a search may measure: its value on each dimension, the spec entry
    that measures it as a plain cell, and that cell."""
    model_config = ConfigDict(frozen=True)
    params: dict[str, Any]
    entry: dict[str, Any]
    cell: Cell


class SearchPlan(BaseModel):
    """A search entry's space and budget. The candidates are not dumped with the cell (each
    trial's result carries its own cell); the dimensions are."""
    model_config = ConfigDict(frozen=True)
    spec: SearchSpec
    dims: tuple[SearchDim, ...]
    grid: int                       # configurations in the space
    trials: int                     # the budget in trials (the default: 15% of the grid)
    candidates: tuple[SearchCandidate, ...] = Field((), exclude=True)


Cell.model_rebuild()
