"""The report's per-model sections (charts, the Pareto front, the batch-size model, generative
rows), the roofline, the full table and the cells that did not run: pieces of the template
context that render.py assembles."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.pareto import pareto_frontier
from ..analysis.roofline import roofline
from ..analysis.scaling import batch_scaling
from . import charts
from .chart_parts import fmt

MAX_CHANGES_LISTED = 8            # slower cells listed under Problems; the rest in the table
DEFAULT_SLO = (99.0, 50.0)          # p99 <= 50 ms when neither the caller nor the cells say
TEMPLATES = Path(__file__).parent / "templates"


def nan_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x

def first_line(text, limit=220) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    # pytest's failure text often starts with a location line; prefer the message
    for ln in lines:
        if ": " in ln and not ln.startswith(("/", "File ")):
            line = ln
            break
    return line if len(line) <= limit else line[:limit - 1] + "…"

def sort_key(x) -> str:
    """A data-sort attribute: numbers as numbers, missing as empty (sorted last)."""
    if x is None:
        return ""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return repr(float(x)) if math.isfinite(x) else ""
    return str(x)

def anchor(model: str) -> str:
    import hashlib
    digest = hashlib.sha1(model.encode()).hexdigest()[:6]
    return "model-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", model).strip("-")[:40] or "x") + \
        f"-{digest}"


def model_section(df, measured, model, several, run_index, per_hour, currency, add, best):
    all_rows = df[df["model"] == model]
    rows = measured[measured["model"] == model].copy()
    rows["cell_label"] = [c + (" (invalid)" if not v else "")
                          for c, v in zip(rows["cell_label"], rows["valid"])]
    section = {"name": model, "anchor": anchor(model), "charts": [], "notes": [], "fits": [],
               "frontier": [], "generative": [], "cells": len(all_rows), "measured": len(rows)}
    if rows.empty:
        section["notes"].append("No measured cells for this model (all skipped or failed).")
        return section
    ctx = _Part(rows, model, several, run_index, add, charts.Series(rows, several), section)
    for part in (_tradeoff_part, _scaling_part, _cdf_part, _generative_part, _serving_part,
                 _utilisation_part):
        part(ctx)
    _cost_part(ctx, per_hour, currency)
    _energy_part(ctx)
    return section


@dataclass
class _Part:
    """What each part of a model's section reads, and the section it adds to."""
    rows: Any
    model: str
    several: bool
    run_index: Any
    add: Any
    series: Any
    section: dict

    def chart(self, figure, caption: str) -> None:
        self.section["charts"].append(self.add(figure, caption))

    def note(self, text: str) -> None:
        self.section["notes"].append(text)


def _tradeoff_part(c: _Part) -> None:
    frontier = pareto_frontier(c.rows, by=None)
    c.section["frontier"] = [{"config": r["cell_label"], "run": r["run_tag"] if c.several else "",
                              "samples_per_s": r["samples_per_s"], "p99": r["p99_ms"]}
                             for _, r in frontier.iterrows()]
    c.chart(charts.tradeoff_chart(c.rows, frontier, c.series, c.run_index,
                                  f"{c.model}: p99 latency vs throughput"),
            "Each point is a cell (hover for its configuration); bars are the p99's confidence "
            "interval; the dotted line joins the Pareto frontier (no other cell has both higher "
            "throughput and lower p99).")


def _scaling_part(c: _Part) -> None:
    fits = batch_scaling(c.rows)
    if not len(fits):
        c.note("Batch scaling: every configuration ran at a single batch size.")
        return
    ids = charts.scaling_charts(c.rows, fits, c.series, c.model)
    c.chart(ids[0], "Measured throughput; hollow markers are the fitted model's predictions "
                    "for untested sizes.")
    c.chart(ids[1], "Mean latency per query; dashed: least-squares fit latency = fixed + "
                    "per-sample × batch.")
    for _, f in fits.iterrows():
        c.section["fits"].append(_fit_row(c, f))


def _fit_row(c: _Part, f) -> dict:
    rows = c.rows
    return {
        "config": " · ".join(str(f[k]) for k in ("runtime_label", "device", "precision",
                                                 "threads", "workload", "serving_label")
                             if k in f and f[k] is not None and f[k] == f[k]),
        "run": next((t for t in rows[rows["run"] == f["run"]]["run_tag"]), "")
        if c.several else "",
        "fixed_ms": f["fixed_ms"], "per_sample_ms": f["per_sample_ms"],
        "batch_sizes": ", ".join(str(b) for b in f["batch_sizes"]),
        "loo_mean": f["loo_mean_rel_err"], "loo_max": f["loo_max_rel_err"],
        "predict": _predictions(f["fit"])}


def _cdf_part(c: _Part) -> None:
    latest = c.rows[c.rows["run_index"] == c.rows["run_index"].max()]
    cdf, note = charts.cdf_chart(latest, c.series, c.model)
    if cdf["data"]:
        which = f" (the latest run, {latest['run_tag'].iloc[0]})" if c.several else ""
        c.chart(cdf, f"Latency distribution per cell{which}, {note}.")


def _generative_part(c: _Part) -> None:
    generative = c.rows[c.rows["ttft_p50_ms"].notna()]
    if len(generative):
        c.section["generative"] = _generative_rows(generative, c.several)
        c.chart(charts.generative_chart(generative, c.model, c.several),
                "Each point is a cell: output tokens per second against time to first token "
                "(p99, with its confidence interval; timed from each request's scheduled send). "
                "Hover for ITL, TPOT and goodput.")


def _serving_part(c: _Part) -> None:
    rows = c.rows
    if rows["serving_label"].nunique() > 1 or rows["queue_ms"].notna().any():
        c.chart(charts.serving_chart(rows, c.model, c.several),
                "Mean latency per served cell; where Triton reported its statistics, split into "
                "queue, compute and the rest (client, network, serialisation).")
    else:
        c.note("Serving systems: every cell ran "
               f"{rows['serving_label'].iloc[0]} (nothing to compare).")


def _utilisation_part(c: _Part) -> None:
    rows = c.rows
    if rows["cpu_cores_used"].notna().any() or rows["gpu_util_pct"].notna().any():
        hosts = {r.get("host") for r in rows.to_dict("records")}
        c.chart(charts.utilisation_chart(rows, c.model, c.several, None),
                "CPU cores kept busy over each cell's measured window (kernel counters); GPU "
                "utilisation from NVML where the cell ran on a GPU." + (
                    "" if len(hosts) <= 1 else " Cells ran on several hosts."))


def _cost_part(c: _Part, per_hour, currency) -> None:
    priced = c.rows[c.rows["cost_per_million"].notna()]
    if len(priced):
        front = pareto_frontier(priced, {"cost_per_million": "min", "p99_ms": "min"}, by=None)
        c.chart(charts.cost_chart(priced, front, c.series, c.run_index, c.model, currency),
                "Cost per million inferences = price per device-hour / (samples/s × 3600) × "
                "10⁶, at the measured throughput; the dotted line joins the cost/latency "
                "Pareto frontier.")
    elif not per_hour:
        c.note("Cost: no prices given (job file `cost: {per_hour: {cpu: 0.40}}` or "
               "`--cost cpu=0.40`).")
    else:
        c.note("Cost: no price matches these cells' devices or hosts.")


def _energy_part(c: _Part) -> None:
    if c.rows["energy_per_inference_j"].notna().any():
        c.chart(charts.energy_chart(c.rows, c.model, c.several),
                "GPU energy over the window (the whole GPU) divided by the samples processed.")
    else:
        c.note("Energy: not measured (needs a GPU cell with the NVML monitor).")


def _generative_rows(rows: pd.DataFrame, several: bool) -> list[dict]:
    """The generative-serving table of a model section: one row per cell."""
    out = []
    for _, r in rows.sort_values(["serving_label", "workload", "run_index"]).iterrows():
        out.append({"config": r["cell_label"], "run": r["run_tag"] if several else "",
                    **{k: nan_none(r[k]) for k in (
                        "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms",
                        "tpot_p50_ms", "tpot_p99_ms", "requests_per_s", "output_tokens_per_s",
                        "goodput_per_s", "goodput_share", "input_tokens_mean",
                        "output_tokens_mean")},
                    "slo": r["slo_verdict"] or "-", "n": r["n"]})
    return out


def _predictions(fit) -> str:
    measured = set(fit.batch_sizes)
    top = max(measured)
    sizes = [b for b in (2 ** k for k in range(0, 12)) if b <= 2 * top and b not in measured][-3:]
    return ", ".join(f"bs{b}: {fmt(fit.predict(b))} ms, {fmt(fit.throughput(b))}/s"
                     for b in sizes) or "-"


def roofline_section(measured, peak_flops, peak_bandwidth, add):
    try:
        roof = roofline(measured, peak_flops, peak_bandwidth)
    except Exception as exc:  # noqa: BLE001 - the roofline is an extra; never lose the report
        return [], f"Roofline unavailable: {type(exc).__name__}: {exc}"
    if roof.empty:
        return [], ("Roofline: no generated models among the measured cells (FLOPs are counted "
                    "for the mlp, resnet and transformer families only).")
    models = list(roof["model"].drop_duplicates())
    colors = {m: charts.PALETTE[i % len(charts.PALETTE)] for i, m in enumerate(models)}
    out = []
    for device, group in roof.groupby("device", sort=False):
        peak = group["peak_flops"].dropna()
        caption = ("Achieved FLOP/s = FLOPs per sample × samples/s. FLOPs: matmul and conv, 2 "
                   "per multiply-add (counted from the model's architecture); bytes: the "
                   "weights at the cell's precision, read once per query (activations not "
                   "counted). ")
        caption += (f"Device peak {fmt(float(peak.iloc[0]) / 1e9)} GFLOP/s (from the job file)."
                    if len(peak) else "Device peak unknown: set report.peak_flops in the job "
                                      "file to draw the roof.")
        best = group.loc[group["achieved_flops"].idxmax()]
        out.append({"device": device, "chart": add(charts.roofline_chart(group, device, colors),
                                                   caption),
                    "best": f"{best['model']} [{best['cell_label']}]",
                    "best_gflops": best["achieved_flops"] / 1e9,
                    "best_fraction": best["fraction_of_peak"]})
    return out, ""


TABLE_COLUMNS = [
    ("run", "run", False), ("model", "model", False), ("configuration", "cell_label", False),
    ("status", "status", False), ("n", "n", True), ("p50 ms", "p50_ms", True),
    ("p99 ms", "p99_ms", True), ("p99 CI", None, False), ("mean ms", "mean_ms", True),
    ("samples/s", "samples_per_s", True), ("queries/s", "queries_per_s", True),
    ("CPU cores", "cpu_cores_used", True), ("RSS MB", "peak_rss_mb", True),
    ("GPU %", "gpu_util_pct", True), ("J/inf", "energy_per_inference_j", True),
    ("cost/M", "cost_per_million", True), ("SLO", "slo_verdict", False),
    ("stop", "stop_reason", False),
]


def table(df: pd.DataFrame, several: bool) -> dict:
    columns = [c for c in TABLE_COLUMNS if c[0] != "run" or several]
    optional = {"gpu_util_pct", "energy_per_inference_j", "cost_per_million", "slo_verdict"}
    columns = [c for c in columns if c[1] not in optional or df[c[1]].notna().any()]
    rows = []
    for _, r in df.iterrows():
        cells = []
        for label, col, numeric in columns:
            cls = ""
            if label == "p99 CI":
                text = (f"[{fmt(r['p99_lower_ms'])}, {fmt(r['p99_upper_ms'])}]"
                        if r["p99_ms"] == r["p99_ms"] else "-")
                cells.append({"text": text, "sort": sort_key(nan_none(r["p99_upper_ms"])),
                              "num": True, "cls": ""})
                continue
            value = r[col] if col == "run" else r.get(col)
            if col == "run":
                value = r["run_tag"]
            if col == "stop_reason" and value:
                if r["ci_half_width_rel"] == r["ci_half_width_rel"]:
                    value = f"{value} ±{100 * r['ci_half_width_rel']:.1f}%"
                if r["host_contended"] is True:
                    value += " · host busy"
                    cls = "warn-text"
            if col != "stop_reason":
                cls = ""
            if col == "status":
                cls = f"status-{value}"
                if value == "passed" and not r["valid"]:
                    value, cls = "invalid", "status-invalid"
            if col == "slo_verdict" and value:
                cls = f"slo-{value}"
            value = nan_none(value)
            text = fmt(value) if numeric else ("-" if value is None else str(value))
            cells.append({"text": text, "sort": sort_key(value), "num": numeric, "cls": cls})
        rows.append({"cells": cells, "title": r["config"], "status": r["status"]})
    return {"columns": [{"label": c[0], "num": c[2]} for c in columns], "rows": rows,
            "confidence": _confidence_label(df)}


def _confidence_label(df) -> str:
    conf = df["confidence"].dropna().unique() if "confidence" in df else []
    return f"{100 * conf[0]:g}%" if len(conf) == 1 else "CI"


def not_run(df: pd.DataFrame, several: bool) -> list[dict]:
    out = []
    for _, r in df[df["status"] != "passed"].iterrows():
        reason = str(r["reason"] or "").strip()
        out.append({"run": r["run_tag"] if several else "", "model": r["model"],
                    "config": r["cell_label"], "status": r["status"],
                    "summary": first_line(reason) or "-", "reason": reason,
                    "long": len(reason) > len(first_line(reason)) + 5, "id": r["id"]})
    return out

