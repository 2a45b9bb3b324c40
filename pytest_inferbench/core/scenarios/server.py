"""server: queries sent open loop at scheduled times (an arrival process at a rate, or a
trace), latency timed from the scheduled send; the rate is offered, so throughput is fixed."""

from .base import Scenario


def _missing(w) -> str | None:
    if w.arrival != "trace" and w.rate is None:
        return "the server scenario needs a `rate` (queries per second)"
    if w.arrival == "trace" and not w.trace:
        return "arrival trace needs `trace: file.csv`"
    return None


def _label(w) -> str:
    what = f"{w.arrival}" + (f"{w.rate:g}" if w.rate else "")
    if w.arrival == "gamma":
        what += f"b{w.burstiness:g}"
    return f"server-{what}"


def _row_label(w) -> str:
    rate = w.get("rate")
    rate_text = f" {rate:g}/s" if isinstance(rate, (int, float)) else ""
    return f"server {w.get('arrival', 'poisson')}{rate_text}"


def _point(row: dict, bs: str) -> str:
    rate = row.get("rate")
    text = f"{rate:g}/s" if isinstance(rate, float) and rate == rate else "server"
    return text if row.get("batch_size") == 1 else f"{text} {bs}"


SCENARIO = Scenario(
    name="server",
    summary="open loop at a rate (poisson, gamma, constant, onoff, trace)",
    generator="pytest_inferbench.workload.open_loop:run",
    target=99.0,
    open_loop=True,
    fixed_rate=True,
    fields=("rate", "trace"),
    paired=True,
    generative="pytest_inferbench.workload.generative:run_server",
    missing=_missing,
    label=_label,
    point=_point,
    row_label=_row_label,
)
