"""The report's Trends section: per cell, its p50, p99 and throughput over the runs in the
results store (this machine fingerprint), change points marked, commit and date on hover.
Input: history.trends.Series.to_json() dicts (the session passes those of its own cells)."""

from __future__ import annotations

from .chart_parts import PALETTE, base_layout, clean, esc, fmt

LINES = (("p50_ms", "p50", PALETTE[0]), ("p99_ms", "p99", PALETTE[1]))


def trends_section(trends: list[dict] | None, add) -> list[dict]:
    out = []
    for t in trends or []:
        runs = t.get("runs") or []
        if len(runs) < 2:
            continue
        x = list(range(1, len(runs) + 1))
        hover = [f"run {i} · {esc((r.get('started_at') or '?')[:19])}<br>commit "
                 f"{esc((r.get('commit') or '?')[:12])}"
                 f"{' (' + esc(r['branch']) + ')' if r.get('branch') else ''}"
                 for i, r in zip(x, runs)]
        data = []
        for key, label, color in LINES:
            data.append({"type": "scatter", "mode": "lines+markers", "name": f"{label} (ms)",
                         "x": x, "y": clean(r.get(key) for r in runs),
                         "line": {"color": color}, "text": hover,
                         "hovertemplate": f"%{{text}}<br>{label} %{{y:.4g}} ms<extra></extra>"})
        data.append({"type": "scatter", "mode": "lines+markers", "name": "throughput (/s)",
                     "x": x, "y": clean(r.get("throughput") for r in runs), "yaxis": "y2",
                     "line": {"color": PALETTE[2], "dash": "dot"}, "text": hover,
                     "hovertemplate": "%{text}<br>throughput %{y:.4g}/s<extra></extra>"})
        layout = base_layout(t.get("cell") or "?", "run (oldest first)", "latency (ms)",
                             height=340)
        layout["yaxis2"] = {"title": {"text": "samples/s"}, "overlaying": "y", "side": "right",
                            "showgrid": False, "automargin": True}
        layout["margin"]["r"] = 64
        shapes, changes = [], []
        for c in t.get("changes") or []:
            at = c["index"] + 1
            color = "#d62728" if c.get("worse") else "#2ca02c"
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": at - 0.5,
                           "x1": at - 0.5, "y0": 0, "y1": 1,
                           "line": {"color": color, "width": 1.5, "dash": "dash"}})
            commits = " .. ".join((v or "?")[:10] for v in c.get("commits") or ())
            changes.append({"metric": c["metric"], "run": at,
                            "date": (c.get("date") or "?")[:10], "commits": commits,
                            "change": f"{100 * (c['ratio'] - 1):+.1f}%",
                            "from_to": f"{fmt(c['before'])} → {fmt(c['after'])}",
                            "pvalue": f"{c['pvalue']:.2g}",
                            "kind": "regression" if c.get("worse") else "improvement"})
        layout["shapes"] = shapes
        caption = (f"{len(runs)} runs on {esc(t.get('machine'))}; dashed lines: change points "
                   f"(red worse, green better).")
        out.append({"cell": t.get("cell"), "chart": add({"data": data, "layout": layout},
                                                        caption, wide=True),
                    "changes": changes})
    return out
