"""single_stream: one query at a time in closed loop; MLPerf's single-stream reports p90."""

from .base import Scenario


def _point(row: dict, bs: str) -> str:
    return "1-stream" if row.get("batch_size") == 1 else f"1-stream {bs}"


SCENARIO = Scenario(
    name="single_stream",
    summary="one query at a time, closed loop (latency)",
    generator="pytest_inferbench.workload.closed_loop:run",
    target=90.0,
    paired=True,
    generative="pytest_inferbench.workload.generative:run_single_stream",
    point=_point,
)
