"""`defaults` and per-entry settings: how long and how precisely one cell is measured."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

from ..core.units import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]


def _warmup(value):
    """An int is a count of queries; a string or float is a duration in seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration ('1s') or a count of queries (50)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a warm-up count cannot be negative")
        return value
    return parse_duration(value)


class Settings(BaseModel):
    """How long and how precisely to measure one cell."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    warmup: Annotated[Union[StrictInt, float], BeforeValidator(_warmup)] = 1.0
    min_duration: Duration = 5.0
    max_duration: Duration = 60.0
    min_queries: int = Field(100, ge=1)
    max_queries: int | None = Field(None, ge=1)
    percentiles: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)
    target_percentile: float | None = Field(None, gt=0, lt=100)
    ci_width: float = Field(0.05, gt=0)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    # share of failed queries (errors + timeouts) a cell may have and still pass
    max_error_rate: float = Field(0.0, ge=0, lt=1)
    # measured in N fresh worker processes (run/fresh_process.py), each its own item; None:
    # once, in the session's process
    processes: int | None = Field(None, ge=1)
    # how long one such process may take, start-up and loading included, before it is killed
    process_timeout: Duration | None = None

    @field_validator("percentiles")
    @classmethod
    def _percentiles_in_range(cls, value):
        if not value:
            raise ValueError("list at least one percentile")
        for p in value:
            if not 0 < p < 100:
                raise ValueError(f"percentile {p} is outside (0, 100)")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _durations_ordered(self):
        if self.max_duration < self.min_duration:
            raise ValueError(f"max_duration ({self.max_duration:g}s) is shorter than "
                             f"min_duration ({self.min_duration:g}s)")
        return self


SETTINGS_FIELDS = tuple(Settings.model_fields)
