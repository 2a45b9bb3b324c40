"""capacity: the highest rate that meets the SLO, searched with open-loop steps (doubling,
then bisection)."""

from .base import Scenario


def _missing(w) -> str | None:
    if not w.slo:
        return "the capacity scenario needs an `slo`, e.g. {p99: 50ms}"
    if w.arrival == "trace":
        return "the capacity scenario draws its own arrivals: not trace"
    return None


def _label(w) -> str:      # a generative SLO bounds several metrics
    return "capacity-" + "-".join(f"{k}-{b * 1e3:g}ms" for k, b in w.slo.items())


SCENARIO = Scenario(
    name="capacity",
    summary="the highest rate that meets the SLO (open-loop steps)",
    generator="pytest_inferbench.workload.rate_search:run_capacity",
    target=99.0,
    headline="capacity",
    open_loop=True,
    rate_search=True,
    fields=("rate", "max_rate", "step_max_duration"),
    generative="pytest_inferbench.workload.generative:run_capacity_search",
    missing=_missing,
    label=_label,
)
