"""What a scenario declares: how it issues queries, which workload fields it takes, what it
needs, its default target percentile, what it reports first, who can measure it and where its
load generator is. One Scenario per module beside this one; the table in __init__.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Callable

# Workload fields that only some scenarios take; the others apply to every scenario.
SCENARIO_FIELDS = ("rate", "trace", "concurrency", "step", "max_rate", "step_max_duration")


def _nothing_missing(workload: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str                       # one line for messages and docs
    # the load generator, "package.module:function", called as
    # fn(sut, settings, workload, target, progress) -> Samples (workload/engine.py)
    generator: str
    target: float                      # default target percentile of the stopping rule
    headline: str = "latency"          # what it reports first: latency | throughput | capacity
    open_loop: bool = False            # sends at scheduled times; latency from the schedule
    rate_search: bool = False          # a search over rates made of open-loop steps
    fixed_rate: bool = False           # throughput is the offered rate: judge latency only
    fields: tuple[str, ...] = ()       # of SCENARIO_FIELDS, those this scenario takes
    paired: bool = False               # paired mode (ab) can cut it into alternating slices
    # its generator for OpenAI streams, "package.module:function" (workload/generative.py)
    generative: str | None = None
    missing: Callable[[Any], str | None] = field(default=_nothing_missing)
    label: Callable[[Any], str] | None = None      # the id part; default: the name
    point: Callable[[dict, str], str] | None = None  # a chart point's short label
    # the report's label of a run file's workload mapping; default: the name
    row_label: Callable[[Mapping], str] | None = None

    @property
    def closed_loop(self) -> bool:
        return not self.open_loop

    @property
    def finds_capacity(self) -> bool:
        """Its figure is the highest rate that meets the SLO (the objective `capacity`)."""
        return self.headline == "capacity"

    def id_label(self, workload) -> str:
        return self.label(workload) if self.label is not None else self.name

    def point_label(self, row: dict) -> str:
        bs = f"bs{row.get('batch_size')}"
        if self.point is not None:
            return self.point(row, bs)
        return f"{self.name} {bs}"

    def report_label(self, workload: Mapping) -> str:
        return self.row_label(workload) if self.row_label is not None else self.name

    def problem(self, workload) -> str | None:
        """Why the workload cannot be measured in this scenario as written, or None."""
        missing = self.missing(workload)
        if missing:
            return missing
        for name in SCENARIO_FIELDS:
            if getattr(workload, name) is not None and name not in self.fields:
                return f"`{name}` does not apply to the {self.name} scenario"
        return None
