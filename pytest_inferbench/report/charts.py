"""Plotly figures as plain JSON-able dicts ({"data": [...], "layout": {...}}), drawn in the page
by the embedded plotly.js. Every text that comes from a run file (model names, labels, hover
text) goes through `esc`: plotly renders a small HTML subset in its texts, and escaped text
shows as text."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#7b4173"]
RUN_SYMBOLS = ["circle", "diamond", "square", "triangle-up", "x", "star", "cross", "pentagon"]
FRONTIER_COLOR = "#111827"
SERIES_AXES = ("runtime_label", "device", "precision", "threads", "serving_label")


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=False)


def fmt(x, digits: int = 3) -> str:
    """A compact number: 1,234 / 12.3 / 0.0123; '-' for None/NaN."""
    if x is None or isinstance(x, str):
        return x or "-"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return "-"
    if abs(x) >= 1e5:
        return f"{x:,.0f}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits + 1}g}"


def _tick_text(v: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def log_axis(values) -> dict:
    """A log axis labelled in plain numbers at 1, 2, 5 of each decade (1 only beyond three
    decades), covering `values`."""
    arr = np.asarray([v for v in _clean(values) if v is not None and v > 0], dtype=float)
    if not len(arr):
        return {"type": "log"}
    lo, hi = math.floor(math.log10(arr.min())), math.ceil(math.log10(arr.max()))
    steps = (1, 2, 5) if hi - lo <= 3 else (1,)
    ticks = [m * 10.0 ** e for e in range(lo, hi + 1) for m in steps]
    inside = [t for t in ticks if arr.min() / 2.2 <= t <= arr.max() * 2.2]
    ticks = inside if len(inside) >= 2 else ticks
    return {"type": "log", "tickvals": [float(f"{t:.6g}") for t in ticks],
            "ticktext": [_tick_text(float(f"{t:.6g}")) for t in ticks]}


def base_layout(title: str, x_title: str, y_title: str, *, height: int = 380,
                x_log=False, y_log=False) -> dict:
    """x_log / y_log: False, or the values a log axis must cover."""
    axis = {"gridcolor": "#e5e7eb", "zerolinecolor": "#d1d5db", "linecolor": "#9ca3af",
            "ticks": "outside", "tickcolor": "#9ca3af", "automargin": True}
    return {
        "title": {"text": esc(title), "font": {"size": 14}, "x": 0.01, "xanchor": "left"},
        "height": height,
        "margin": {"l": 64, "r": 16, "t": 40, "b": 56},
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12,
                 "color": "#1f2937"},
        "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff",
        "xaxis": {**axis, "title": {"text": x_title}, **(_log(x_log) if x_log is not False else {})},
        "yaxis": {**axis, "title": {"text": y_title}, **(_log(y_log) if y_log is not False else {})},
        "legend": {"orientation": "h", "y": -0.22, "x": 0, "yanchor": "top",
                   "font": {"size": 11}},
        "hovermode": "closest",
        "hoverlabel": {"align": "left", "font": {"size": 11}},
    }


def _clean(values) -> list:
    """Floats for JSON: NaN and inf become None."""
    out = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            out.append(v)
            continue
        out.append(f if math.isfinite(f) else None)
    return out


def _log(values) -> dict:
    return log_axis(values) if values is not True else {"type": "log"}


def _wide(values) -> bool:
    """Log scale when the positive values span more than 20x."""
    arr = np.asarray([v for v in _clean(values) if v is not None and v > 0], dtype=float)
    return len(arr) > 1 and arr.max() / arr.min() > 20


def hover_text(row, extra: Sequence[tuple[str, str]] = ()) -> str:
    """The cell's full configuration and its main numbers, for a point's hover box."""
    lines = [f"<b>{esc(row.get('model'))}</b>  {esc(row.get('cell_label'))}"]
    for line in str(row.get("config") or "").splitlines():
        lines.append(esc(line))
    if row.get("run_tag"):
        lines.append(f"run: {esc(row.get('run_tag'))} ({esc(row.get('run'))})")
    lines.append(f"p50 {fmt(row.get('p50_ms'))} ms, p99 {fmt(row.get('p99_ms'))} ms "
                 f"[{fmt(row.get('p99_lower_ms'))}, {fmt(row.get('p99_upper_ms'))}], "
                 f"n={row.get('n')}")
    lines.append(f"throughput {fmt(row.get('samples_per_s'))} samples/s "
                 f"({fmt(row.get('queries_per_s'))} queries/s)")
    if row.get("host_contended") is True:
        lines.append(f"host busy: other processes used {fmt(row.get('other_cpu_cores'))} cores")
    if row.get("valid") is False:
        lines.append(f"INVALID: {esc(row.get('validity_reasons'))}")
    for k, v in extra:
        lines.append(f"{esc(k)}: {esc(v)}")
    return "<br>".join(lines)


class Series:
    """Stable series names and colours for one model's rows: the axes that vary among them
    (runtime, device, precision, threads, serving) plus the run when there are several."""

    def __init__(self, rows: pd.DataFrame, several_runs: bool):
        self.axes = [a for a in SERIES_AXES if a in rows and rows[a].nunique(dropna=False) > 1]
        if not self.axes:
            self.axes = ["runtime_label"]
        self.several_runs = several_runs
        self.colors: dict[str, str] = {}
        for _, row in rows.iterrows():
            self.color(self.name(row, with_run=False))

    def name(self, row, with_run: bool = True) -> str:
        parts = [str(row.get(a)) for a in self.axes if row.get(a) is not None]
        text = " · ".join(parts) or "?"
        if with_run and self.several_runs:
            text += f" · {row.get('run_tag')}"
        return text

    def color(self, name: str) -> str:
        if name not in self.colors:
            self.colors[name] = PALETTE[len(self.colors) % len(PALETTE)]
        return self.colors[name]


def point_label(row) -> str:
    """A short label next to a point: what differs between a model's cells along the chart."""
    scenario = row.get("scenario")
    bs = f"bs{row.get('batch_size')}"
    if scenario == "single_stream":
        return "1-stream" if row.get("batch_size") == 1 else f"1-stream {bs}"
    if scenario == "server":
        rate = row.get("rate")
        text = f"{rate:g}/s" if isinstance(rate, float) and rate == rate else "server"
        return text if row.get("batch_size") == 1 else f"{text} {bs}"
    if scenario == "concurrency":
        c = row.get("concurrency")
        return f"c{c:g}" + ("" if row.get("batch_size") == 1 else f" {bs}")
    if scenario and scenario != "offline":
        return f"{scenario} {bs}"
    return bs


def _alternating(members: list, x: str) -> list[str]:
    """Labels above and below in turn along x, so neighbouring points' labels do not overlap."""
    order = sorted(range(len(members)), key=lambda i: (members[i].get(x) or 0))
    pos = [""] * len(members)
    for rank, i in enumerate(order):
        pos[i] = "top center" if rank % 2 == 0 else "bottom center"
    return pos


def _run_symbol(row, runs: dict[str, int]) -> str:
    return RUN_SYMBOLS[runs.get(row.get("run"), 0) % len(RUN_SYMBOLS)]


# ----------------------------------------------------------------------------- charts

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
                err = {"type": "data", "symmetric": False, "array": _clean(up),
                       "arrayminus": _clean(lo), "thickness": 1, "width": 3,
                       "color": series.color(base)}
        trace = {"type": "scatter", "mode": "markers+text", "name": esc(name),
                 "x": _clean(m.get(x) for m in members), "y": _clean(ys),
                 "text": [esc(point_label(m)) for m in members],
                 "textposition": _alternating(members, x),
                 "textfont": {"size": 10, "color": "#4b5563"},
                 "hovertext": [hover_text(m) for m in members], "hoverinfo": "text",
                 "marker": {"size": 10, "color": series.color(base),
                            "symbol": [_run_symbol(m, runs) for m in members],
                            "line": {"width": 1, "color": "#ffffff"}},
                 "cliponaxis": False}
        if err:
            trace["error_y"] = err
        data.append(trace)
    if len(frontier) >= 1:
        f = frontier.sort_values(x)
        data.append({"type": "scatter", "mode": "lines", "name": frontier_name,
                     "x": _clean(f[x]), "y": _clean(f[y]), "hoverinfo": "skip",
                     "line": {"color": FRONTIER_COLOR, "width": 1.5, "dash": "dot"}})
    ys = list(rows[y])
    if y.endswith("_ms") and f"{y[:-3]}_upper_ms" in rows:
        ys += list(rows[f"{y[:-3]}_upper_ms"]) + list(rows[f"{y[:-3]}_lower_ms"])
    layout = base_layout(title, x_title, y_title,
                         x_log=list(rows[x]) if _wide(rows[x]) else False,
                         y_log=ys if _wide(rows[y]) else False)
    return {"data": data, "layout": layout}


def scaling_charts(rows: pd.DataFrame, fits: pd.DataFrame, series: Series, model: str
                   ) -> list[dict]:
    """Throughput and latency against batch size, with the fitted model's predictions."""
    thr, lat = [], []
    max_b = 1
    for _, fit_row in fits.iterrows():
        fit = fit_row["fit"]
        members = rows
        for key in ("run", "runtime_label", "device", "precision", "threads", "workload",
                    "serving_label"):
            if key in fit_row and key in members:
                val = fit_row[key]
                members = members[members[key].isna()] if val is None or val != val \
                    else members[members[key] == val]
        members = members.sort_values("batch_size")
        if members.empty:
            continue
        first = members.iloc[0]
        name = series.name(first) + (f" · {first['workload']}" if rows["workload"].nunique() > 1
                                     else "")
        color = series.color(series.name(first, with_run=False))
        max_b = max(max_b, int(members["batch_size"].max()))
        hover = [hover_text(m) for _, m in members.iterrows()]
        thr.append({"type": "scatter", "mode": "lines+markers", "name": esc(name),
                    "legendgroup": esc(name), "x": _clean(members["batch_size"]),
                    "y": _clean(members["samples_per_s"]), "hovertext": hover,
                    "hoverinfo": "text", "line": {"color": color, "width": 2},
                    "marker": {"size": 8, "color": color}})
        lat.append({"type": "scatter", "mode": "markers", "name": esc(name) + " (measured)",
                    "legendgroup": esc(name), "x": _clean(members["batch_size"]),
                    "y": _clean(members["mean_ms"]), "hovertext": hover, "hoverinfo": "text",
                    "marker": {"size": 9, "color": color}})
        measured = set(int(b) for b in members["batch_size"])
        top = max(measured)
        grid = sorted(set([1] + [2 ** k for k in range(0, 12) if 2 ** k <= 2 * top]) | measured)
        pred = [fit.predict(b) for b in grid]
        err = fit.loo_max_rel_err
        err_text = (f"leave-one-out error ≤ {100 * err:.1f}%" if err == err
                    else "error unknown: needs ≥ 3 batch sizes")
        lat.append({"type": "scatter", "mode": "lines", "name": esc(name) + " (fit)",
                    "legendgroup": esc(name), "showlegend": False, "x": grid, "y": _clean(pred),
                    "line": {"color": color, "width": 1.5, "dash": "dash"},
                    "hovertext": [f"fit: {fmt(fit.fixed_ms)} + {fmt(fit.per_sample_ms)} × {b}"
                                  f" = {fmt(p)} ms<br>{err_text}" for b, p in zip(grid, pred)],
                    "hoverinfo": "text"})
        untested = [b for b in grid if b not in measured]
        if untested:
            lat.append({"type": "scatter", "mode": "markers", "name": esc(name) + " (predicted)",
                        "legendgroup": esc(name), "showlegend": False, "x": untested,
                        "y": _clean(fit.predict(b) for b in untested),
                        "marker": {"size": 8, "color": "#ffffff",
                                   "line": {"color": color, "width": 1.5}},
                        "hovertext": [f"predicted for batch {b}: {fmt(fit.predict(b))} ms, "
                                      f"{fmt(fit.throughput(b))} samples/s<br>{err_text}"
                                      for b in untested], "hoverinfo": "text"})
            thr.append({"type": "scatter", "mode": "markers", "name": esc(name) + " (predicted)",
                        "legendgroup": esc(name), "showlegend": False, "x": untested,
                        "y": _clean(fit.throughput(b) for b in untested),
                        "marker": {"size": 8, "color": "#ffffff",
                                   "line": {"color": color, "width": 1.5}},
                        "hovertext": [f"predicted for batch {b}: {fmt(fit.throughput(b))} "
                                      f"samples/s<br>{err_text}" for b in untested],
                        "hoverinfo": "text"})
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
                     "x": _clean(xs), "y": _clean(100 * y for y in ys),
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
                         x_log=xs if _wide(xs := [x for t in data for x in t["x"]]) else False)
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
                     "x": _clean(rows[col].where(has)), "marker": {"color": color},
                     "hovertext": hover, "hoverinfo": "text+x"})
    data.append({"type": "bar", "orientation": "h", "name": "end to end (no server split)",
                 "y": names, "x": _clean(rows["mean_ms"].where(~has)),
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
    y = _clean(rows["ttft_p99_ms"])
    upper = [u - v if u == u and v == v else None
             for u, v in zip(rows["ttft_p99_upper_ms"], rows["ttft_p99_ms"])]
    lower = [v - lo if lo == lo and v == v else None
             for lo, v in zip(rows["ttft_p99_lower_ms"], rows["ttft_p99_ms"])]
    data = [{"type": "scatter", "mode": "markers", "name": "cells",
             "x": _clean(rows["output_tokens_per_s"]), "y": y,
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
             "x": _clean(rows["cpu_cores_used"]), "marker": {"color": "#6366f1"},
             "hovertext": hover, "hoverinfo": "text+x", "xaxis": "x"}]
    layout = base_layout(f"{model}: CPU and GPU utilisation", "CPU cores busy (over the window)",
                         "", height=_bar_height(len(rows)))
    if cores:
        layout["xaxis"]["range"] = [0, max(cores, float(np.nanmax(
            _clean(rows["cpu_cores_used"]) + [0]) if len(rows) else cores)) * 1.05]
    if rows["gpu_util_pct"].notna().any():
        data.append({"type": "bar", "orientation": "h", "name": "GPU utilisation (%)", "y": names,
                     "x": _clean(rows["gpu_util_pct"]), "marker": {"color": "#10b981"},
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
             "x": _clean(rows["energy_per_inference_j"]), "marker": {"color": "#ef4444"},
             "hovertext": [hover_text(r, [("GPU power (W)", fmt(r.get("gpu_power_w")))])
                           for _, r in rows.iterrows()], "hoverinfo": "text+x"}]
    layout = base_layout(f"{model}: GPU energy per inference", "joules per inference (whole GPU)",
                         "", height=_bar_height(len(rows)))
    layout["yaxis"]["autorange"] = "reversed"
    return {"data": data, "layout": layout}


def _roof_x(rows) -> list:
    """The x range the roof lines are drawn over (around the points and the ridge)."""
    xs = [x for x in _clean(rows["arithmetic_intensity"]) if x]
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
                     "x": _clean(group["arithmetic_intensity"]),
                     "y": _clean(group["achieved_flops"]),
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
