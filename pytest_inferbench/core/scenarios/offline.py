"""offline: back-to-back batches in closed loop; its figure is throughput, which the median
batch time tracks (the stopping rule's default target, p50)."""

from .base import Scenario

SCENARIO = Scenario(
    name="offline",
    summary="back-to-back batches, closed loop (throughput)",
    generator="pytest_inferbench.workload.closed_loop:run",
    target=50.0,
    headline="throughput",
    paired=True,
    point=lambda row, bs: bs,
)
