"""Plotly figures as plain JSON-able dicts ({"data": [...], "layout": {...}}), drawn in the page
by the embedded plotly.js. Every text that comes from a run file (model names, labels, hover
text) goes through `esc`: plotly renders a small HTML subset in its texts, and escaped text
shows as text."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .chart_parts import (
    FRONTIER_COLOR,
    PALETTE,
    Series,
    alternating,
    base_layout,
    clean,
    esc,
    fmt,
    hover_text,
    point_label,
    run_symbol,
    wide,
)


def tradeoff_chart(rows: pd.DataFrame, frontier: pd.DataFrame, series: Series,
                   runs: dict[str, int], title: str, x="samples_per_s", y="p99_ms",
                   x_title="throughput (samples/s)", y_title="p99 latency (ms)",
                   frontier_name="Pareto frontier") -> dict:
    data = []
    groups: dict[str, list] = {}
    for _, row in rows.iterrows():
        groups.setdefault(series.name(row), []).append(row)
    for name, members in groups.items():
        base = series.name(members[0], with_run=False)
        ys = [m.get(y) for m in members]
        err = None
        if y.endswith("_ms") and f"{y[:-3]}_upper_ms" in rows:
            up = [m.get(f"{y[:-3]}_upper_ms") - m.get(y) for m in members]
            lo = [m.get(y) - m.get(f"{y[:-3]}_lower_ms") for m in members]
            if any(v == v and v is not None for v in up + lo):
                err = {"type": "data", "symmetric": False, "array": clean(up),
                       "arrayminus": clean(lo), "thickness": 1, "width": 3,
                       "color": series.color(base)}
        trace = {"type": "scatter", "mode": "markers+text", "name": esc(name),
                 "x": clean(m.get(x) for m in members), "y": clean(ys),
                 "text": [esc(point_label(m)) for m in members],
                 "textposition": alternating(members, x),
                 "textfont": {"size": 10, "color": "#4b5563"},
                 "hovertext": [hover_text(m) for m in members], "hoverinfo": "text",
                 "marker": {"size": 10, "color": series.color(base),
                            "symbol": [run_symbol(m, runs) for m in members],
                            "line": {"width": 1, "color": "#ffffff"}},
                 "cliponaxis": False}
        if err:
            trace["error_y"] = err
        data.append(trace)
    if len(frontier) >= 1:
        f = frontier.sort_values(x)
        data.append({"type": "scatter", "mode": "lines", "name": frontier_name,
                     "x": clean(f[x]), "y": clean(f[y]), "hoverinfo": "skip",
                     "line": {"color": FRONTIER_COLOR, "width": 1.5, "dash": "dot"}})
    ys = list(rows[y])
    if y.endswith("_ms") and f"{y[:-3]}_upper_ms" in rows:
        ys += list(rows[f"{y[:-3]}_upper_ms"]) + list(rows[f"{y[:-3]}_lower_ms"])
    layout = base_layout(title, x_title, y_title,
                         x_log=list(rows[x]) if wide(rows[x]) else False,
                         y_log=ys if wide(rows[y]) else False)
    return {"data": data, "layout": layout}


def scaling_charts(rows: pd.DataFrame, fits: pd.DataFrame, series: Series, model: str
                   ) -> list[dict]:
    """Throughput and latency against batch size, with the fitted model's predictions."""
    thr, lat = [], []
    max_b = 1
    for _, fit_row in fits.iterrows():
        members = _fit_members(rows, fit_row)
        if members.empty:
            continue
        first = members.iloc[0]
        name = series.name(first) + (f" · {first['workload']}" if rows["workload"].nunique() > 1
                                     else "")
        color = series.color(series.name(first, with_run=False))
        max_b = max(max_b, int(members["batch_size"].max()))
        _measured_traces(thr, lat, members, esc(name), color)
        _fit_traces(thr, lat, members, fit_row["fit"], esc(name), color)
    return _scaling_layouts(thr, lat, model, max_b)


def _fit_members(rows: pd.DataFrame, fit_row) -> pd.DataFrame:
    """The rows one fit was made from (same configuration but the batch size)."""
    members = rows
    for key in ("run", "runtime_label", "device", "precision", "threads", "workload",
                "serving_label"):
        if key in fit_row and key in members:
            val = fit_row[key]
            members = members[members[key].isna()] if val is None or val != val \
                else members[members[key] == val]
    return members.sort_values("batch_size")


def _measured_traces(thr: list, lat: list, members, name: str, color: str) -> None:
    hover = [hover_text(m) for _, m in members.iterrows()]
    thr.append({"type": "scatter", "mode": "lines+markers", "name": name,
                "legendgroup": name, "x": clean(members["batch_size"]),
                "y": clean(members["samples_per_s"]), "hovertext": hover,
                "hoverinfo": "text", "line": {"color": color, "width": 2},
                "marker": {"size": 8, "color": color}})
    lat.append({"type": "scatter", "mode": "markers", "name": name + " (measured)",
                "legendgroup": name, "x": clean(members["batch_size"]),
                "y": clean(members["mean_ms"]), "hovertext": hover, "hoverinfo": "text",
                "marker": {"size": 9, "color": color}})


def _fit_traces(thr: list, lat: list, members, fit, name: str, color: str) -> None:
    """The fitted line over a grid of batch sizes, and hollow markers where none was run."""
    measured = set(int(b) for b in members["batch_size"])
    top = max(measured)
    grid = sorted(set([1] + [2 ** k for k in range(0, 12) if 2 ** k <= 2 * top]) | measured)
    pred = [fit.predict(b) for b in grid]
    err = fit.loo_max_rel_err
    err_text = (f"leave-one-out error ≤ {100 * err:.1f}%" if err == err
                else "error unknown: needs ≥ 3 batch sizes")
    lat.append({"type": "scatter", "mode": "lines", "name": name + " (fit)",
                "legendgroup": name, "showlegend": False, "x": grid, "y": clean(pred),
                "line": {"color": color, "width": 1.5, "dash": "dash"},
                "hovertext": [f"fit: {fmt(fit.fixed_ms)} + {fmt(fit.per_sample_ms)} × {b}"
                              f" = {fmt(p)} ms<br>{err_text}" for b, p in zip(grid, pred)],
                "hoverinfo": "text"})
    untested = [b for b in grid if b not in measured]
    if not untested:
        return
    hollow = {"size": 8, "color": "#ffffff", "line": {"color": color, "width": 1.5}}
    lat.append({"type": "scatter", "mode": "markers", "name": name + " (predicted)",
                "legendgroup": name, "showlegend": False, "x": untested,
                "y": clean(fit.predict(b) for b in untested), "marker": hollow,
                "hovertext": [f"predicted for batch {b}: {fmt(fit.predict(b))} ms, "
                              f"{fmt(fit.throughput(b))} samples/s<br>{err_text}"
                              for b in untested], "hoverinfo": "text"})
    thr.append({"type": "scatter", "mode": "markers", "name": name + " (predicted)",
                "legendgroup": name, "showlegend": False, "x": untested,
                "y": clean(fit.throughput(b) for b in untested), "marker": dict(hollow),
                "hovertext": [f"predicted for batch {b}: {fmt(fit.throughput(b))} "
                              f"samples/s<br>{err_text}" for b in untested],
                "hoverinfo": "text"})


def _scaling_layouts(thr: list, lat: list, model: str, max_b: int) -> list[dict]:
    log_b = max_b >= 8
    t_layout = base_layout(f"{model}: throughput vs batch size", "batch size",
                           "throughput (samples/s)", x_log=log_b)
    # linear: the fitted model is a straight line
    l_layout = base_layout(f"{model}: latency vs batch size (fit: fixed + per-sample)",
                           "batch size", "mean latency per query (ms)")
    l_layout["xaxis"]["rangemode"] = "tozero"
    l_layout["yaxis"]["rangemode"] = "tozero"
    if log_b:
        t_layout["xaxis"]["dtick"] = math.log10(2)
    return [{"data": thr, "layout": t_layout}, {"data": lat, "layout": l_layout}]


def cdf_points(row) -> tuple[list[float], list[float], str]:
    """(latency ms, cumulative fraction, source) from the histogram if stored, else from the
    stored percentiles (min, p50 ... p99.9, max)."""
    hist = row.get("histogram")
    if isinstance(hist, dict) and hist.get("edges_ms") and hist.get("counts"):
        edges, counts = hist["edges_ms"], hist["counts"]
        total = float(sum(counts)) or 1.0
        xs, ys, acc = [float(edges[0])], [0.0], 0.0
        for edge, count in zip(edges[1:], counts):
            acc += count
            xs.append(float(edge))
            ys.append(acc / total)
        return xs, ys, "histogram"
    pts = []
    if row.get("min_ms") == row.get("min_ms") and row.get("min_ms") is not None:
        pts.append((row["min_ms"], 0.0))
    for key in [k for k in row.keys() if k.startswith("p") and k.endswith("_ms")
                and "_lower" not in k and "_upper" not in k]:
        try:
            q = float(key[1:-3]) / 100
        except ValueError:
            continue
        v = row.get(key)
        if v is not None and v == v:
            pts.append((v, q))
    if row.get("max_ms") == row.get("max_ms") and row.get("max_ms") is not None:
        pts.append((row["max_ms"], 1.0))
    pts.sort()
    return [p[0] for p in pts], [p[1] for p in pts], "percentiles"


def cdf_chart(rows: pd.DataFrame, series: Series, model: str) -> tuple[dict, str]:
    data, sources = [], set()
    for i, (_, row) in enumerate(rows.iterrows()):
        xs, ys, source = cdf_points(row)
        if len(xs) < 2:
            continue
        sources.add(source)
        base = series.name(row, with_run=False)
        data.append({"type": "scatter", "mode": "lines+markers" if source == "percentiles"
                     else "lines", "name": esc(f"{series.name(row, with_run=False)} · {point_label(row)}"),
                     "x": clean(xs), "y": clean(100 * y for y in ys),
                     "line": {"color": series.color(base), "width": 1.5,
                              "dash": ["solid", "dot", "dash", "dashdot", "longdash"][
                                  (int(row.get("batch_size") or 1).bit_length() - 1) % 5]},
                     "marker": {"size": 5}, "hovertext": hover_text(row), "hoverinfo": "text+x+y"})
    note = ("from the stored percentiles (min, p50, p90, p95, p99, p99.9, max), joined by straight "
            "lines: the run files hold no latency histogram" if sources == {"percentiles"} else
            "from the latency histograms" if sources == {"histogram"} else
            "from histograms where stored, else from the stored percentiles")
    layout = base_layout(f"{model}: latency CDF", "latency per query (ms)",
                         "queries at or below (%)",
                         x_log=xs if wide(xs := [x for t in data for x in t["x"]]) else False)
    layout["yaxis"]["range"] = [0, 101]
    return {"data": data, "layout": layout}, note


def _bar_height(n: int) -> int:
    return max(260, 110 + 26 * n)


def _cell_names(rows: pd.DataFrame, several_runs: bool) -> list[str]:
    return [esc(r["cell_label"] + (f" ({r['run_tag']})" if several_runs else ""))
            for _, r in rows.iterrows()]


def serving_chart(rows: pd.DataFrame, model: str, several_runs: bool) -> dict:
    """Mean latency per serving configuration, split into Triton's queue / compute / the rest
    where the server reported it."""
    rows = rows.sort_values(["serving_label", "rate", "workload", "batch_size", "run_index"])
    names = [esc(f"{r['serving_label']} · {point_label(r)}" + (f" ({r['run_tag']})"
                                                              if several_runs else ""))
             for _, r in rows.iterrows()]
    has = rows["queue_ms"].notna()
    hover = [hover_text(r) for _, r in rows.iterrows()]
    parts = [("queue (server)", "queue_ms", "#f59e0b"), ("compute (server)", "compute_ms",
                                                          "#2563eb"),
             ("client, network, serialisation", "other_ms", "#9ca3af")]
    data = []
    for label, col, color in parts:
        data.append({"type": "bar", "orientation": "h", "name": label, "y": names,
                     "x": clean(rows[col].where(has)), "marker": {"color": color},
                     "hovertext": hover, "hoverinfo": "text+x"})
    data.append({"type": "bar", "orientation": "h", "name": "end to end (no server split)",
                 "y": names, "x": clean(rows["mean_ms"].where(~has)),
                 "marker": {"color": "#10b981"}, "hovertext": hover, "hoverinfo": "text+x"})
    layout = base_layout(f"{model}: serving systems side by side (mean latency)",
                         "mean latency per query (ms)", "", height=_bar_height(len(rows)))
    layout["barmode"] = "stack"
    layout["legend"]["traceorder"] = "normal"
    layout["yaxis"]["autorange"] = "reversed"
    return {"data": data, "layout": layout}


def generative_chart(rows: pd.DataFrame, model: str, several_runs: bool) -> dict:
    """Generative serving: output tokens/s against TTFT p99 (with its bounds), one point per
    cell; ITL, TPOT and goodput in the hover text."""
    names = _cell_names(rows, several_runs)
    hover = [esc(f"{n}<br>TTFT p50 {_f(r['ttft_p50_ms'])} ms, p99 {_f(r['ttft_p99_ms'])} ms"
                 f"<br>ITL p50 {_f(r['itl_p50_ms'])} ms, p99 {_f(r['itl_p99_ms'])} ms"
                 f"<br>TPOT p50 {_f(r['tpot_p50_ms'])} ms, p99 {_f(r['tpot_p99_ms'])} ms"
                 f"<br>{_f(r['requests_per_s'])} requests/s, goodput "
                 f"{_f(r['goodput_per_s'])}/s<br>n = {r['n']}").replace("&lt;br&gt;", "<br>")
             for n, (_, r) in zip(names, rows.iterrows())]
    y = clean(rows["ttft_p99_ms"])
    upper = [u - v if u == u and v == v else None
             for u, v in zip(rows["ttft_p99_upper_ms"], rows["ttft_p99_ms"])]
    lower = [v - lo if lo == lo and v == v else None
             for lo, v in zip(rows["ttft_p99_lower_ms"], rows["ttft_p99_ms"])]
    data = [{"type": "scatter", "mode": "markers", "name": "cells",
             "x": clean(rows["output_tokens_per_s"]), "y": y,
             "error_y": {"type": "data", "symmetric": False, "array": upper,
                         "arrayminus": lower, "thickness": 1},
             "text": hover, "hoverinfo": "text", "marker": {"size": 10, "color": "#7c3aed"}}]
    layout = base_layout(f"{model}: generative serving (TTFT p99 vs output tokens/s)",
                         "output tokens per second", "TTFT p99 (ms)")
    layout["yaxis"]["type"] = "log"
    return {"data": data, "layout": layout}


def _f(x) -> str:
    return "-" if x is None or x != x else f"{x:,.3g}"


def utilisation_chart(rows: pd.DataFrame, model: str, several_runs: bool,
                      cores: float | None) -> dict:
    names = _cell_names(rows, several_runs)
    hover = [hover_text(r) for _, r in rows.iterrows()]
    data = [{"type": "bar", "orientation": "h", "name": "CPU cores busy", "y": names,
             "x": clean(rows["cpu_cores_used"]), "marker": {"color": "#6366f1"},
             "hovertext": hover, "hoverinfo": "text+x", "xaxis": "x"}]
    layout = base_layout(f"{model}: CPU and GPU utilisation", "CPU cores busy (over the window)",
                         "", height=_bar_height(len(rows)))
    if cores:
        layout["xaxis"]["range"] = [0, max(cores, float(np.nanmax(
            clean(rows["cpu_cores_used"]) + [0]) if len(rows) else cores)) * 1.05]
    if rows["gpu_util_pct"].notna().any():
        data.append({"type": "bar", "orientation": "h", "name": "GPU utilisation (%)", "y": names,
                     "x": clean(rows["gpu_util_pct"]), "marker": {"color": "#10b981"},
                     "hovertext": hover, "hoverinfo": "text+x", "xaxis": "x2"})
        layout["xaxis2"] = {"title": {"text": "GPU utilisation (%)"}, "overlaying": "x",
                            "side": "top", "range": [0, 100], "showgrid": False}
        layout["margin"]["t"] = 70
    layout["barmode"] = "group"
    layout["yaxis"]["autorange"] = "reversed"
    return {"data": data, "layout": layout}


def cost_chart(rows: pd.DataFrame, frontier: pd.DataFrame, series: Series,
               runs: dict[str, int], model: str, currency: str) -> dict:
    return tradeoff_chart(rows, frontier, series, runs,
                          f"{model}: cost per million inferences vs p99 latency",
                          x="cost_per_million", y="p99_ms",
                          x_title=f"cost per million inferences ({esc(currency)})",
                          frontier_name="Pareto frontier (cost, p99)")


def energy_chart(rows: pd.DataFrame, model: str, several_runs: bool) -> dict:
    rows = rows[rows["energy_per_inference_j"].notna()]
    names = _cell_names(rows, several_runs)
    data = [{"type": "bar", "orientation": "h", "name": "energy per inference (J)", "y": names,
             "x": clean(rows["energy_per_inference_j"]), "marker": {"color": "#ef4444"},
             "hovertext": [hover_text(r, [("GPU power (W)", fmt(r.get("gpu_power_w")))])
                           for _, r in rows.iterrows()], "hoverinfo": "text+x"}]
    layout = base_layout(f"{model}: GPU energy per inference", "joules per inference (whole GPU)",
                         "", height=_bar_height(len(rows)))
    layout["yaxis"]["autorange"] = "reversed"
    return {"data": data, "layout": layout}


def _roof_x(rows) -> list:
    """The x range the roof lines are drawn over (around the points and the ridge)."""
    xs = [x for x in clean(rows["arithmetic_intensity"]) if x]
    if not xs:
        return []
    lo, hi = min(xs) / 4, max(xs) * 4
    peak, bw = rows["peak_flops"].dropna(), rows["peak_bandwidth"].dropna()
    if len(peak) and len(bw):
        knee = float(peak.iloc[0]) / float(bw.iloc[0])
        lo, hi = min(lo, knee / 4), max(hi, knee * 4)
    return [lo, hi] if len(peak) else []


def roofline_chart(rows: pd.DataFrame, device: str, model_colors: dict[str, str]) -> dict:
    data = []
    for model, group in rows.groupby("model", sort=False):
        data.append({"type": "scatter", "mode": "markers", "name": esc(model),
                     "x": clean(group["arithmetic_intensity"]),
                     "y": clean(group["achieved_flops"]),
                     "marker": {"size": 10, "color": model_colors.get(model, PALETTE[0])},
                     "hovertext": [hover_text(r, [
                         ("FLOPs per sample", fmt(r["flops_per_sample"])),
                         ("weight bytes", fmt(r["weight_bytes"])),
                         ("achieved", f"{fmt(r['achieved_flops'] / 1e9)} GFLOP/s"),
                         ("of peak", f"{100 * r['fraction_of_peak']:.1f}%"
                          if r["fraction_of_peak"] == r["fraction_of_peak"] else "peak unknown")])
                         for _, r in group.iterrows()], "hoverinfo": "text",
                     "cliponaxis": False})
    peak = rows["peak_flops"].dropna()
    layout = base_layout(f"Roofline: {device}", "arithmetic intensity (FLOPs per weight byte)",
                         "achieved FLOP/s",
                         x_log=list(rows["arithmetic_intensity"]) + list(_roof_x(rows)),
                         y_log=list(rows["achieved_flops"]) + list(rows["peak_flops"].dropna())
                         + [x * b for x in _roof_x(rows)[:1] for b in rows["peak_bandwidth"]
                            .dropna()[:1]])
    span = _roof_x(rows)
    if span:
        p = float(peak.iloc[0])
        lo, hi = span
        bw = rows["peak_bandwidth"].dropna()
        if len(bw):
            b = float(bw.iloc[0])
            knee = p / b
            data.append({"type": "scatter", "mode": "lines", "name": "roof (bandwidth, peak)",
                         "x": [lo, knee, hi], "y": [lo * b, p, p], "hoverinfo": "skip",
                         "line": {"color": FRONTIER_COLOR, "width": 1.5}})
        else:
            data.append({"type": "scatter", "mode": "lines", "name": "device peak",
                         "x": [lo, hi], "y": [p, p], "hoverinfo": "skip",
                         "line": {"color": FRONTIER_COLOR, "width": 1.5, "dash": "dash"}})
    return {"data": data, "layout": layout}
