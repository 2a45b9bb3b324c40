"""What a generative (`serving: {system: openai}`) benchmark may be written as: its metrics and
SLO keys (`ttft_p99: 2s`), its scenarios, and the rules a cell must meet, checked when the spec
is loaded. The metrics' definitions are workload/generative_metrics.py's."""

from __future__ import annotations

from ..core.scenarios import names

METRICS = ("ttft", "itl", "tpot", "e2e")
SCENARIOS = names(lambda s: s.generative is not None)


def parse_slo_key(key: str) -> tuple[str, float] | None:
    """'ttft_p99' -> ('ttft', 99.0); None when the key is not a generative metric's."""
    metric, _, pct = key.partition("_p")
    if metric not in METRICS or not pct:
        return None
    try:
        p = float(pct)
    except ValueError:
        return None
    return (metric, p) if 0 < p < 100 else None


def cell_problem(workload, serving, model) -> str | None:
    """Why a spec's generative cell cannot run as written (the matrix raises it with the entry's line)."""
    generative = serving.system == "openai"
    if not generative:
        if workload.prompts is not None or workload.keep_requests or \
                workload.client_processes is not None:
            return ("`prompts`, `keep_requests` and `client_processes` apply to "
                    "`serving: {system: openai}` only")
        if workload.slo and any(parse_slo_key(k) for k in workload.slo):
            return "SLOs on ttft/itl/tpot/e2e apply to `serving: {system: openai}` only"
        return None
    kind = workload.scenario_def
    if kind.generative is None:
        return (f"generative serving measures the scenarios {', '.join(SCENARIOS)}, "
                f"not {workload.scenario}")
    if workload.client_processes is not None and not kind.open_loop:
        return "`client_processes` sends an open loop: scenario server or capacity"
    if kind.rate_search and workload.client_processes == 0:
        return ("the capacity search on goodput sends from client processes: "
                "`client_processes` of at least 1")
    if serving.url is None:
        if model is None or getattr(model, "family", None) != "decoder":
            return ("`serving: {system: openai}` without a `url` launches the plugin's own "
                    "server, which serves a generated decoder: "
                    "`model: {family: decoder, ...}` (or give the `url` of a running server)")
    elif model is not None:
        return "a `url` names a running server: its model is `serving.model`, not `model`"
    if workload.slo:
        bad = [k for k in workload.slo if parse_slo_key(k) is None]
        if bad:
            return (f"SLO key '{bad[0]}': a generative SLO bounds ttft, itl, tpot or e2e "
                    f"at a percentile, e.g. {{ttft_p99: 2s, tpot_p99: 200ms}}")
    return None
