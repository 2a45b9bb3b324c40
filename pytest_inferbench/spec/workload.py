"""The `workload` axis: the scenario, its arrivals, rate, concurrency, SLO and, for generative
serving, its prompts. Lists in a workload mapping are sweeps (the matrix expands them)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..core.scenarios import NAMES as SCENARIOS
from ..core.scenarios import scenario as scenario_of
from .generative import parse_slo_key
from .prompts import Prompts
from .settings import Duration

ARRIVALS = ("constant", "poisson", "gamma", "onoff", "trace")
_SLO_KEY = re.compile(r"^p(\d+(\.\d+)?)$")


def check_slo(value):
    """An SLO is one latency bound on one percentile: {p99: 50ms}."""
    if value is None:
        return value
    if len(value) != 1:
        raise ValueError("give one latency bound, e.g. {p99: 50ms}")
    (key,) = value
    m = _SLO_KEY.match(key)
    if not m or not 0 < float(m.group(1)) < 100:
        raise ValueError(f"SLO key '{key}' should name a percentile, e.g. p99 or p99.9")
    return value


class Workload(BaseModel):
    """What load the system under test sees. Lists in a workload mapping are sweeps."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    scenario: Literal[SCENARIOS]
    arrival: Literal[ARRIVALS] = "poisson"           # server: when queries are sent
    rate: float | None = Field(None, gt=0)            # server: queries/s; ramp/capacity: start
    step: float | None = Field(None, gt=0)            # ramp: added to the rate each step
    max_rate: float | None = Field(None, gt=0)        # ramp: stop after this rate
    burstiness: float = Field(1.0, gt=0)              # gamma: shape (1 = Poisson, <1 burstier)
    on: Duration = 1.0                                # onoff: seconds on ...
    off: Duration = 1.0                               # ... and off
    trace: str | None = None                          # trace: CSV of timestamps (seconds)
    concurrency: int | None = Field(None, ge=1)       # concurrency: clients in closed loop
    slo: dict[str, Duration] | None = None            # e.g. {p99: 50ms}: a pass/fail verdict
    timeout: Duration = 2.0                           # per query (open loop: drain deadline)
    send_lag_bound: Duration = 0.001                  # sends later than this count as late
    step_min_duration: Duration = 2.0                 # ramp/capacity: shortest step
    step_max_duration: Duration | None = None         # ramp/capacity: longest (default: ample)
    # generative serving (system openai; workload/generative.py, workload/prompts.py)
    prompts: Prompts | None = None                    # input/output lengths, prefix, dataset
    keep_requests: bool = False                       # raw per-request records in the run file
    # open loop's client: 0 = in-process (issuer thread + event-loop thread), N = N processes
    # each sending its share of the schedule; None = chosen by the expected chunk rate
    client_processes: int | None = Field(None, ge=0)

    @field_validator("slo")
    @classmethod
    def _slo_keys(cls, value):
        if value and any(parse_slo_key(k) for k in value):   # {ttft_p99: 2s, tpot_p99: 200ms}
            return value
        return check_slo(value)

    @model_validator(mode="after")
    def _fields_fit_the_scenario(self):
        problem = self.scenario_def.problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def scenario_def(self):
        """The scenario's declaration in the registry (core/scenarios/)."""
        return scenario_of(self.scenario)

    def slo_target(self) -> tuple[float, float] | None:
        """(percentile, bound in seconds) or None."""
        if not self.slo or len(self.slo) != 1 or not _SLO_KEY.match(next(iter(self.slo))):
            return None     # none, or a generative SLO (several metrics, judged apart)
        ((key, bound),) = self.slo.items()
        return float(key[1:]), bound

    def label(self) -> str:
        base = self.scenario_def.id_label(self)
        if self.client_processes is not None:
            base += f"-clients{self.client_processes}"
        return f"{base}-{self.prompts.label()}" if self.prompts is not None else base
