"""What every chart of the report shares: the palette and run symbols, number formatting and
escaping, log axes, the base layout, hover text, and the series (one colour per configuration
along the axes that vary)."""


from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..core.scenarios import SCENARIOS

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
    arr = np.asarray([v for v in clean(values) if v is not None and v > 0], dtype=float)
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


def clean(values) -> list:
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


def wide(values) -> bool:
    """Log scale when the positive values span more than 20x."""
    arr = np.asarray([v for v in clean(values) if v is not None and v > 0], dtype=float)
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
    """A short label next to a point: what differs between a model's cells along the chart
    (each scenario says how it names a point: core/scenarios/)."""
    scenario = row.get("scenario")
    kind = SCENARIOS.get(scenario)
    if kind is not None:
        return kind.point_label(row)
    bs = f"bs{row.get('batch_size')}"
    return f"{scenario} {bs}" if scenario else bs      # a scenario this version does not know


def alternating(members: list, x: str) -> list[str]:
    """Labels above and below in turn along x, so neighbouring points' labels do not overlap."""
    order = sorted(range(len(members)), key=lambda i: (members[i].get(x) or 0))
    pos = [""] * len(members)
    for rank, i in enumerate(order):
        pos[i] = "top center" if rank % 2 == 0 else "bottom center"
    return pos


def run_symbol(row, runs: dict[str, int]) -> str:
    return RUN_SYMBOLS[runs.get(row.get("run"), 0) % len(RUN_SYMBOLS)]


# ----------------------------------------------------------------------------- charts
