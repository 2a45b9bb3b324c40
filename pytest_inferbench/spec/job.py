"""The job file's own sections (`--infer-config`): report, cost, baseline, followers, and the
Job they make with the job-wide defaults and gate."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .followers import Follower
from .gate import Gate
from .settings import Duration
from .workload import check_slo


class ReportSection(BaseModel):
    """The job file's `report` section: where the HTML report goes and what it shows."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    html: str | Literal[False] | None = None   # path relative to rootdir, "{name}": the job's
    title: str | None = None                   # name; false: no report
    slo: dict[str, Duration] | None = None     # best configuration under it, e.g. {p99: 50ms}
    peak_flops: dict[str, Annotated[float, Field(gt=0)]] | None = None      # FLOP/s, roofline
    peak_bandwidth: dict[str, Annotated[float, Field(gt=0)]] | None = None  # bytes/s

    @field_validator("slo")
    @classmethod
    def _one_percentile(cls, value):
        return check_slo(value)


class CostSection(BaseModel):
    """The job file's `cost` section: prices per device-hour, keyed by device type (`cuda`),
    device (`cuda:1`) or host label."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    per_hour: dict[str, Annotated[float, Field(ge=0)]]
    currency: str = "$"


class BaselineSection(BaseModel):
    """The job file's `baseline` section: compare against `latest`, a saved baseline's name,
    a run file's path (relative to the job file) or `history` (each cell's earlier runs in the
    results store); save this session under a name. window, min_runs, branch: history only."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    compare: str | None = None
    save: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    window: int | None = Field(None, ge=2, le=1000)
    min_runs: int | None = Field(None, ge=2, le=1000)
    branch: str | None = None

    @model_validator(mode="after")
    def _history_keys_need_history(self):
        used = [k for k in ("window", "min_runs", "branch") if getattr(self, k) is not None]
        if used and self.compare != "history":
            raise ValueError(f"{', '.join(used)}: only with compare: history (they choose "
                             f"which earlier runs of the results store a cell is judged against)")
        return self


class Job(BaseModel):
    """The --infer-config file: job-wide defaults, plus its own benchmarks if any."""
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    path: str
    name: str
    defaults: dict[str, Any] = {}
    has_benchmarks: bool = False
    report: ReportSection | None = None
    cost: CostSection | None = None
    gate: Gate | None = None
    baseline: BaselineSection | None = None
    followers: tuple[Follower, ...] | None = None   # spec/followers.py
