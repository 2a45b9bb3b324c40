"""ramp: open-loop steps at a rising rate (InferBench's progressive mode), until saturation."""

from .base import Scenario


def _missing(w) -> str | None:
    if w.rate is None or w.step is None:
        return "the ramp scenario needs `rate` (start) and `step`"
    return None


SCENARIO = Scenario(
    name="ramp",
    summary="open-loop steps at a rising rate",
    generator="pytest_inferbench.workload.rate_search:run_ramp",
    target=99.0,
    open_loop=True,
    rate_search=True,
    fields=("rate", "step", "max_rate", "step_max_duration"),
    missing=_missing,
    label=lambda w: f"ramp{w.rate:g}+{w.step:g}",
    row_label=lambda w: f"ramp {w.get('rate')}+{w.get('step')}/s",
)
