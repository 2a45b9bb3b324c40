"""Per cell measured more than once in a session (fresh processes or repeats): the noise split
of each gated metric (core/noise.py) and what a gate at that noise can resolve, for the run
file (`noise`), the terminal and the report."""

from __future__ import annotations

from ..core.noise import split
from ..core.result import Result
from ..core.thresholds import GateConfig, threshold_text
from .cells import display, group_by_config, in_search, is_measured, observe

SPLIT_METRICS = ("p50", "p99", "throughput")


def cell_noise(results: list[Result], gate: GateConfig | None = None) -> list[dict]:
    """One entry per cell with two or more measured runs: {cell, id, runs, fresh, metrics:
    {metric: NoiseSplit JSON}, gate: [{metric, limit, resolution, runs_needed}]}; `gate`
    overrides the cells' own thresholds (--infer-gate)."""
    out = []
    for rows in group_by_config(r for r in results
                                if r.ab is None and not in_search(r)).values():
        rows = [r for r in rows if is_measured(r)]
        if len(rows) < 2:
            continue
        confidence = rows[0].latency_ms.confidence or 0.95
        config = gate or GateConfig.from_json((rows[0].cell or {}).get("gate"))
        metrics = {}
        for metric in dict.fromkeys((*SPLIT_METRICS, *config.thresholds)):
            obs = [observe(r, metric) for r in rows]
            found = split([o.value for o in obs], [o.se_log for o in obs], confidence)
            if found is not None:
                metrics[metric] = found
        out.append({"cell": display(rows[0]), "id": rows[0].id, "runs": len(rows),
                    "fresh": all(r.fresh_process is not None for r in rows),
                    "metrics": {m: s.to_json() for m, s in metrics.items()},
                    "gate": _resolvable(metrics, config)})
    return out


def _resolvable(metrics: dict, config: GateConfig) -> list[dict]:
    """Per gated metric: its threshold against the half-width of N-vs-N runs at this noise."""
    out = []
    for metric, limit in config.thresholds.items():
        found = metrics.get(metric)
        if found is not None:
            out.append({"metric": metric, "limit": limit,
                        "resolution": round(found.resolution(), 6),
                        "runs_needed": found.runs_to_resolve(limit)})
    return out


def noise_lines(entries: list[dict]) -> list[str]:
    """The terminal's lines: per cell, each metric's split and the smallest change a
    comparison of as many runs against as many resolves at it; then the gate thresholds
    below that, with what would help."""
    lines = []
    for e in entries:
        kind = "fresh processes" if e["fresh"] else "repeats in one process"
        parts = [f"{m} sd ±{_pct(s['total_sd'])} (within ±{_pct(s['within_sd'])}, between "
                 f"±{_pct(s['between_sd'])}), resolves ±{_pct(s['resolution'])}"
                 for m, s in e["metrics"].items()]
        lines.append(f"{e['cell']}: {e['runs']} {kind}: " + "; ".join(parts))
        for g in e["gate"]:
            if g["resolution"] >= g["limit"]:
                help_ = (f"{g['runs_needed']} runs per side would" if g["runs_needed"]
                         else "no practical number of runs would")
                lines.append(f"  gate {g['metric']} {threshold_text(g['metric'], g['limit'])} "
                             f"is below what {e['runs']} runs resolve (±{_pct(g['resolution'])}"
                             f" at this noise): {help_} (processes: N), or paired mode (ab)")
    return lines


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"
