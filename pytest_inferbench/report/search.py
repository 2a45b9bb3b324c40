"""The report's Search section, one block per configuration search: the answer, the trials
in the order measured, the objective over trials (with the best so far), the Pareto front of
objective against p99, and the winner as a spec entry ready to paste. Input: the frame's
rows whose `search_role` is "search" (their `search` column is Result.search)."""

from __future__ import annotations

import yaml

from .chart_parts import FRONTIER_COLOR, PALETTE, base_layout, clean, esc, fmt

STATE_STYLE = {"measured": ("circle", PALETTE[0]), "pruned": ("x", "#9ca3af"),
               "infeasible": ("x", "#d62728"), "failed": ("x-open", "#7f1d1d"),
               "unavailable": ("circle-open", "#9ca3af")}


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _interval(t: dict) -> str:
    lo, hi = t.get("lower"), t.get("upper")
    if lo is None and hi is None:
        return ""
    return f"[{fmt(lo)}, {fmt(hi) if hi is not None else '∞'}]"


def search_section(rows, add) -> list[dict]:
    out = []
    for _, row in rows.iterrows():
        s = row["search"]
        if not isinstance(s, dict):
            continue
        trials = s.get("trials") or []
        unit = s.get("unit") or ""
        objective = s.get("objective") or "?"
        table = [{"number": t["number"] + 1, "config": _params(t.get("params") or {}),
                  "cell": t.get("cell_id"), "state": t.get("state"),
                  "objective": fmt(t.get("objective")), "interval": _interval(t),
                  "p99": fmt(t.get("p99_ms")), "seconds": fmt(t.get("seconds")),
                  "note": t.get("note") or "",
                  "winner": t["number"] == s.get("winner"),
                  "runner_up": t["number"] == s.get("runner_up")} for t in trials]
        entry = s.get("spec_entry")
        out.append({
            "id": row["id"], "verdict": s.get("verdict"), "objective": objective,
            "unit": unit, "sampler": s.get("sampler"), "stop": s.get("stop"),
            "measured": s.get("measured"), "grid": s.get("grid"),
            "distinguishable": s.get("distinguishable"),
            "confirmation": s.get("confirmation"),
            "excluded": s.get("excluded") or [], "trials": table,
            "entry_yaml": yaml.safe_dump([entry], sort_keys=False, allow_unicode=True)
            if entry else None,
            "progress_chart": _progress_chart(s, trials, objective, unit, add),
            "pareto_chart": _pareto_chart(s, trials, objective, unit, add),
        })
    return out


def _progress_chart(s, trials, objective, unit, add) -> str | None:
    if not trials:
        return None
    data = []
    for state, (symbol, color) in STATE_STYLE.items():
        pts = [t for t in trials if t.get("state") == state]
        if not pts:
            continue
        y = [t.get("objective") if t.get("objective") is not None else t.get("upper")
             or t.get("lower") for t in pts]
        trace = {"type": "scatter", "mode": "markers", "name": state,
                 "x": [t["number"] + 1 for t in pts], "y": clean(y),
                 "marker": {"symbol": symbol, "color": color, "size": 9},
                 "text": [esc(_params(t.get("params") or {})) for t in pts],
                 "hovertemplate": f"trial %{{x}}: %{{y:.4g}} {esc(unit)}<br>%{{text}}"
                                  f"<extra>{state}</extra>"}
        if state == "measured":
            trace["error_y"] = {"type": "data", "symmetric": False, "color": "#93c5fd",
                                "array": clean((t["upper"] - t["objective"])
                                               if t.get("upper") is not None else 0
                                               for t in pts),
                                "arrayminus": clean((t["objective"] - t["lower"])
                                                    if t.get("lower") is not None else 0
                                                    for t in pts)}
        data.append(trace)
    best = [t.get("best_so_far") for t in trials]
    data.append({"type": "scatter", "mode": "lines", "name": "best so far",
                 "x": [t["number"] + 1 for t in trials], "y": clean(best),
                 "line": {"color": FRONTIER_COLOR, "shape": "hv", "width": 1.5}})
    layout = base_layout(f"{objective} over trials", "trial (in the order measured)",
                         f"{objective} ({unit})", height=340)
    return add({"data": data, "layout": layout},
               f"Each trial's {esc(objective)} with its interval (capacity: the search's "
               f"bracket); pruned trials are plotted at the rate they were proven to fail, "
               f"infeasible ones at their bound.")


def _pareto_chart(s, trials, objective, unit, add) -> str | None:
    pts = [t for t in trials if t.get("state") == "measured" and t.get("objective") is not None
           and t.get("p99_ms") is not None]
    if len(pts) < 2:
        return None
    front = set(s.get("pareto") or [])
    on = sorted((t for t in pts if t["number"] in front), key=lambda t: t["p99_ms"])
    data = [{"type": "scatter", "mode": "markers", "name": "trials",
             "x": clean(t["p99_ms"] for t in pts), "y": clean(t["objective"] for t in pts),
             "marker": {"color": "#9ca3af", "size": 8},
             "text": [esc(t.get("cell_id")) for t in pts],
             "hovertemplate": "%{text}<br>p99 %{x:.4g} ms, %{y:.4g}<extra></extra>"},
            {"type": "scatter", "mode": "lines+markers", "name": "Pareto front",
             "x": clean(t["p99_ms"] for t in on), "y": clean(t["objective"] for t in on),
             "line": {"color": FRONTIER_COLOR, "shape": "hv"},
             "marker": {"color": FRONTIER_COLOR, "size": 9},
             "text": [esc(t.get("cell_id")) for t in on],
             "hovertemplate": "%{text}<br>p99 %{x:.4g} ms, %{y:.4g}<extra></extra>"}]
    layout = base_layout(f"{objective} against p99", "p99 latency (ms)",
                         f"{objective} ({unit})", height=340,
                         x_log=[t["p99_ms"] for t in pts])
    return add({"data": data, "layout": layout},
               "Measured trials; the front: no other trial has both a better objective and "
               "a lower p99 (capacity trials: p99 at their highest passing rate).")
