"""Paired mode (`ab:`): what the baseline side changes, the rounds and slices, and the rules a
paired cell must meet (checked when the spec is loaded)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.scenarios import names
from .axes import model_label
from .document import Document, check_keys
from .model import ModelSpec
from .runtime import RuntimeSpec, Threads
from .serving import Serving
from .settings import Duration

AB_SCENARIOS = names(lambda s: s.paired)
AB_CLOSED_LOOP = names(lambda s: s.paired and s.closed_loop)
AB_BASELINE_KEYS = ("model", "runtime", "precision", "threads", "serving", "python", "git")


class ABBaseline(BaseModel):
    """What the baseline side of a paired A/B cell changes; the candidate is the cell as
    written. Nothing changed: an A/A pair (a calibration of the noise)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: ModelSpec | None = None
    model_label: str | None = None
    runtime: str | None = None
    runtime_options: dict[str, Any] | None = None
    precision: str | None = None
    threads: Threads | None = None
    serving: Serving | None = None  # another serving configuration (or inprocess vs served)
    python: str | None = None      # another interpreter (venv): an execnet popen gateway
    git: str | None = None         # a revision of the rootdir's repository (a worktree)

    def label(self) -> str:
        runtime = (RuntimeSpec(name=self.runtime, **(self.runtime_options or {})).label()
                   if self.runtime is not None else None)
        changes = (("model", self.model_label if self.model is not None else None),
                   ("runtime", runtime), ("precision", self.precision),
                   ("threads", self.threads.label() if self.threads is not None else None),
                   ("serving", self.serving.label() if self.serving is not None else None),
                   ("python", self.python), ("git", self.git))
        parts = [f"{what} {value}" for what, value in changes if value is not None]
        return ", ".join(parts) or "the same cell (A/A)"


class ABSpec(BaseModel):
    """Paired mode: baseline and candidate measured interleaved in this session, `rounds`
    rounds (more, up to `max_rounds`, while undecided), each side `slice` seconds a round in
    sub-slices of `switch` seconds that alternate between the sides. Defaults depend on the
    scenario (see `for_scenario`): closed loop 0.5 s in 10 ms sub-slices; open loop 2 s in
    0.5 s sub-slices, since a sub-slice must hold enough arrivals at the cell's rate.
    With `processes: P` (settings), the sides run in pairs of fresh processes, P pairs and
    more, up to `max_processes`, while undecided; each pair runs `rounds` rounds and the
    pairs' ratios are judged (schedule/runs.py checks where that applies)."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    rounds: int = Field(10, ge=3, le=10_000)
    max_rounds: int | None = Field(None, ge=3, le=10_000)
    slice: Duration | None = Field(None, gt=0)
    switch: Duration | None = Field(None, gt=0)
    # with `processes: P` (pairs of fresh processes, `rounds` rounds each): at most this many
    # pairs while undecided; default 4 P
    max_processes: int | None = Field(None, ge=2, le=10_000)
    # the baseline is a fixed reference measured alongside in the cell's own process: its
    # ratio is judged against its own earlier runs (history mode), never against 1
    reference: bool = False
    baseline: ABBaseline = ABBaseline()

    def for_scenario(self, scenario: str) -> "ABSpec":
        """slice and switch filled with the scenario's defaults."""
        closed = scenario in AB_CLOSED_LOOP
        slice_s = self.slice if self.slice is not None else (0.5 if closed else 2.0)
        switch = self.switch if self.switch is not None else (0.01 if closed else 0.5)
        return self.model_copy(update={"slice": slice_s, "switch": min(switch, slice_s)})

    @model_validator(mode="after")
    def _ordered(self):
        if self.max_rounds is not None and self.max_rounds < self.rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) is below rounds ({self.rounds})")
        if self.switch is not None and self.slice is not None and self.switch > self.slice:
            raise ValueError(f"switch ({self.switch:g}s) is longer than slice ({self.slice:g}s)")
        return self

    @property
    def cap(self) -> int:
        return self.max_rounds if self.max_rounds is not None else 4 * self.rounds

    def pair_cap(self, processes: int) -> int:
        """The most pairs of processes a cell starting with `processes` pairs may run."""
        return self.max_processes if self.max_processes is not None else 4 * processes


def ab_section(ctx, raw, path) -> ABSpec:
    doc = ctx.doc
    check_keys(doc, raw, tuple(ABSpec.model_fields), path, "ab")
    base = raw.get("baseline") or {}
    bpath = path + ("baseline",)
    check_keys(doc, base, AB_BASELINE_KEYS, bpath, "ab.baseline")
    resolved: dict[str, Any] = {}
    if "model" in base:
        model = ctx.axes.resolve("model", base["model"], bpath + ("model",))
        resolved["model"], resolved["model_label"] = model[0], model_label(model)
    if "runtime" in base:
        runtime = ctx.axes.resolve("runtime", base["runtime"], bpath + ("runtime",))
        resolved["runtime"], resolved["runtime_options"] = runtime.name, runtime.options()
    if "precision" in base:
        resolved["precision"] = ctx.axes.resolve("precision", base["precision"],
                                                 bpath + ("precision",))
    if "threads" in base:
        resolved["threads"] = ctx.axes.resolve("threads", base["threads"], bpath + ("threads",))
    if "serving" in base:
        serving = base["serving"]
        if isinstance(serving, str):
            serving = {"system": serving}
        resolved["serving"] = ctx.axes.resolve("serving", serving, bpath + ("serving",))
    if "python" in base:
        resolved["python"] = str(ctx.axes.existing_file(base["python"], "python interpreter",
                                                bpath + ("python",)))
    if "git" in base:
        rev = base["git"]
        if not isinstance(rev, str) or not rev.strip() or rev.startswith("-"):
            raise doc.error(f"expected a git revision (a commit, tag or branch), got {rev!r}",
                            bpath + ("git",))
        resolved["git"] = rev.strip()
    if "python" in resolved and "git" in resolved:
        raise doc.error("give python or git, not both", bpath)
    fields = {k: v for k, v in raw.items() if k != "baseline"}
    return doc.validate(ABSpec, {**fields, "baseline": ABBaseline(**resolved)}, path)


def check_ab_cell(doc: Document, cell: dict, path) -> None:
    workload, ab = cell["workload"], cell["ab"]
    scenario, kind = workload.scenario, workload.scenario_def
    if not kind.paired:
        raise doc.error(f"paired mode (ab) measures the scenarios {', '.join(AB_SCENARIOS)} "
                        f"(it cuts the load into alternating slices), not {scenario}", path)
    if kind.open_loop and workload.arrival == "trace":
        raise doc.error("paired mode (ab) draws a fresh schedule for every slice: a trace "
                        "replay cannot be cut into alternating slices (use poisson, gamma, "
                        "constant or onoff at the trace's rate)", path)
    servings = [cell["serving"]] + ([ab.baseline.serving] if ab.baseline.serving else [])
    if any(s.system == "openai" for s in servings):
        raise doc.error("paired mode (ab) does not interleave generative serving (openai) "
                        "cells yet: compare them against a stored baseline", path)
    if kind.closed_loop and any(s.system == "inprocess" and s.instances != 1
                                          for s in servings):
        raise doc.error("paired mode (ab) runs closed-loop scenarios with one caller: "
                        "in-process instances must be 1 (use the server scenario for "
                        "several instances)", path)
    if (ab.baseline.python or ab.baseline.git) and (
            kind.open_loop or any(s.system != "inprocess" for s in servings)):
        raise doc.error("a baseline in another interpreter or git revision runs in-process "
                        f"and closed loop: combine python/git with an in-process "
                        f"{' or '.join(AB_CLOSED_LOOP)} cell", path)
    if ab.reference and (ab.baseline.python or ab.baseline.git
                         or any(s.system != "inprocess" for s in servings)):
        raise doc.error("a reference (ab.reference) is measured in the cell's own process, "
                        "which is what lets it cancel that process's and the machine's "
                        "speed: both sides must be in-process (no python, git or server)",
                        path)
    b = ab.baseline
    changed = [k for k in ("model", "runtime", "precision", "threads") if getattr(b, k)]
    if cell["model"] is None and changed and (b.model is None or b.serving is None):
        raise doc.error(f"this endpoint has no source model, so the baseline cannot change "
                        f"its {changed[0]}: pair it with another serving configuration "
                        f"(ab.baseline.serving, with a model if that one needs one)", path)
    gate = cell.get("gate")
    if kind.fixed_rate and gate is not None and "throughput" in gate.thresholds:
        raise doc.error("the server scenario offers a fixed rate, so both sides' throughput "
                        "is that rate: gate open-loop pairs on latency (p50, p99, mean)",
                        path)
