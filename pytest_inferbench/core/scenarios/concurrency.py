"""concurrency: N clients in closed loop, each sending its next query when its previous one
returns (perf_analyzer's --concurrency-range)."""

from .base import Scenario


def _missing(w) -> str | None:
    if w.concurrency is None:
        return "the concurrency scenario needs `concurrency` (clients)"
    return None


def _point(row: dict, bs: str) -> str:
    c = row.get("concurrency")
    return f"c{c:g}" + ("" if row.get("batch_size") == 1 else f" {bs}")


SCENARIO = Scenario(
    name="concurrency",
    summary="N clients in closed loop",
    generator="pytest_inferbench.workload.concurrency:run",
    target=99.0,
    fields=("concurrency",),
    generative="pytest_inferbench.workload.generative:run_concurrency_scenario",
    missing=_missing,
    label=lambda w: f"concurrency{w.concurrency}",
    point=_point,
    row_label=lambda w: f"concurrency {w.get('concurrency')}",
)
