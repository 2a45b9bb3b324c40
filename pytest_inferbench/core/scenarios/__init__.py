"""The scenario registry: one module per scenario (its declaration: core/scenarios/base.py),
registered in the one table below. Spec validation, ids, the engine's dispatch to a load
generator, paired mode, the report and the searches ask this table instead of comparing
names. A new scenario is one new module and one line here (docs/architecture.md)."""

from __future__ import annotations

from . import capacity, concurrency, offline, ramp, server, single_stream
from .base import SCENARIO_FIELDS, Scenario

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    offline.SCENARIO, single_stream.SCENARIO, server.SCENARIO, concurrency.SCENARIO,
    ramp.SCENARIO, capacity.SCENARIO)}
NAMES = tuple(SCENARIOS)


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; expected one of "
                         f"{', '.join(NAMES)}") from None


def names(predicate) -> tuple[str, ...]:
    """The scenarios a predicate on their declaration holds for, in table order."""
    return tuple(n for n, s in SCENARIOS.items() if predicate(s))


__all__ = ["NAMES", "SCENARIOS", "SCENARIO_FIELDS", "Scenario", "names", "scenario"]
