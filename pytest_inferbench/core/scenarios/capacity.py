"""capacity: the highest rate that meets the SLO, searched with open-loop steps (doubling,
then bisection)."""

from collections.abc import Mapping

from .base import Scenario


def _missing(w) -> str | None:
    if not w.slo:
        return "the capacity scenario needs an `slo`, e.g. {p99: 50ms}"
    if w.arrival == "trace":
        return "the capacity scenario draws its own arrivals: not trace"
    return None


def _row_label(w) -> str:
    if not isinstance(w.get("slo"), Mapping):
        return "capacity"
    ((key, bound),) = list(w["slo"].items())[:1] or [("?", None)]
    bound_text = f"{bound * 1e3:g}ms" if isinstance(bound, (int, float)) else str(bound)
    return f"capacity {key}<={bound_text}"


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
    row_label=_row_label,
)
