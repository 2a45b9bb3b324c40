"""The HTML trade-off report: one self-contained file from run files.

    render_report([".inferbench/runs/a.json", "b.json"], "reports/nightly.html",
                  title="Nightly", cost={"per_hour": {"cpu": 0.40}})

The page is rendered from Jinja2 templates with autoescape on, embeds plotly.js once, and fetches
nothing (a Content-Security-Policy in the page forbids every network request). Sections:
summary (what ran, where, problems first, best configuration under the SLO), per model the
trade-off charts, a roofline, a sortable and filterable table of every cell, skipped and failed
cells with their reasons, provenance per run.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..analysis.cost import with_cost
from ..analysis.frame import Run, frame_from_runs, ok_rows, read_runs
from ..analysis.slo import best_under_slo
from ..core.units import parse_duration
from ..core.version import __version__
from ..gate.compare import headline
from .chart_parts import fmt

MAX_CHANGES_LISTED = 8            # slower cells listed under Problems; the rest in the table
DEFAULT_SLO = (99.0, 50.0)          # p99 <= 50 ms when neither the caller nor the cells say
TEMPLATES = Path(__file__).parent / "templates"
from .sections import anchor, first_line, model_section, not_run, roofline_section, sort_key, table
from .search import search_section
from .trends import trends_section


class ReportError(ValueError):
    """Nothing to render, or a setting the report cannot use."""


def render_report(sources, out_path: str | Path | None = None, title: str | None = None,
                  cost: Mapping | None = None, slo=None, peak_flops: Mapping | None = None,
                  peak_bandwidth: Mapping | None = None, trends: list | None = None) -> Path:
    """Render run files (paths, directories, run documents) or frames from `load_results` into
    one HTML file; returns its path (default `reports/<first run's name>.html`).

    cost: `{"per_hour": {"cpu": 0.40, "cuda": 2.50}, "currency": "$"}` (or just the per_hour
    mapping): prices per device-hour, keyed by host label, device or device type.
    slo: `(percentile, bound_ms)`, `{"p99": "50ms"}` or `"p99<=50ms"`: the SLO the best
    configuration is chosen under (default: the cells' own SLO when they share one, else
    p99 <= 50 ms).
    peak_flops / peak_bandwidth: per device (FLOP/s, bytes/s) for the roofline.
    trends: each cell's history (history.trends.Series.to_json()) for the Trends section."""
    df, runs = _frame(sources)
    if not runs:
        raise ReportError("no runs to report")
    name = runs[0].get("name") or "session"
    out = Path(out_path) if out_path else Path("reports", f"{_safe(name)}.html")
    html_text = build_html(df, runs, title=title or f"Inference benchmark report: {name}",
                           cost=cost, slo=slo, peak_flops=peak_flops,
                           peak_bandwidth=peak_bandwidth, trends=trends)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html_text, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "report"


def _frame(sources) -> tuple[pd.DataFrame, list[dict]]:
    if isinstance(sources, pd.DataFrame):
        sources = [sources]
    if isinstance(sources, (list, tuple)) and sources and all(
            isinstance(s, pd.DataFrame) for s in sources):
        frames, runs = [], []
        for f in sources:
            meta = list(f.attrs.get("runs") or [])
            offset = len(runs)
            f = f.copy()
            if "run_index" in f:
                f["run_index"] = f["run_index"] + offset
            frames.append(f)
            runs.extend(meta or [{"label": label, "run_id": label, "name": "session",
                                  "provenance": {}} for label in f["run"].unique()])
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        df.attrs = {}
        return df, runs
    parsed: list[Run] = read_runs(sources)
    df = frame_from_runs(parsed)
    runs = list(df.attrs["runs"])
    df.attrs = {}           # pandas deep-copies attrs on every operation: keep them apart
    return df, runs


# ----------------------------------------------------------------------------- settings

def parse_slo(slo, df: pd.DataFrame | None = None) -> tuple[float, float, str]:
    """(percentile, bound in ms, where it came from)."""
    if slo is None:
        if df is not None and len(df) and df["slo_bound_ms"].notna().any():
            pairs = df[["slo_percentile", "slo_bound_ms"]].dropna().drop_duplicates()
            if len(pairs) == 1:
                p, b = pairs.iloc[0]
                return float(p), float(b), "the cells' own SLO"
        return (*DEFAULT_SLO, "default (set report.slo in the job file)")
    if isinstance(slo, str):
        m = re.match(r"^\s*p(\d+(?:\.\d+)?)\s*(?:<=|=|:)\s*(\S+)\s*$", slo)
        if not m:
            raise ReportError(f"SLO {slo!r}: expected e.g. p99<=50ms")
        return float(m.group(1)), parse_duration(m.group(2)) * 1e3, "given"
    if isinstance(slo, Mapping):
        if len(slo) != 1:
            raise ReportError("give one SLO bound, e.g. {p99: 50ms}")
        ((key, bound),) = slo.items()
        if not str(key).startswith("p"):
            raise ReportError(f"SLO key {key!r}: expected a percentile such as p99")
        return float(str(key)[1:]), parse_duration(bound) * 1e3, "given"
    p, bound_ms = slo
    return float(p), float(bound_ms), "given"


def _cost_settings(cost) -> tuple[dict, str]:
    if not cost:
        return {}, "$"
    if hasattr(cost, "model_dump"):
        cost = cost.model_dump()
    if "per_hour" in cost:
        return dict(cost.get("per_hour") or {}), str(cost.get("currency") or "$")
    return dict(cost), "$"


# ----------------------------------------------------------------------------- building

def build_html(df: pd.DataFrame, runs: list[dict], title: str, cost=None, slo=None,
               peak_flops=None, peak_bandwidth=None, trends=None) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined
    context = build_context(df, runs, title, cost, slo, peak_flops, peak_bandwidth, trends)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "allow_nan": False}
    env.filters["fmt"] = fmt
    env.filters["pct"] = _pct
    env.filters["sortkey"] = sort_key
    return env.get_template("report.html.j2").render(**context, plotly_js=_plotly_js())


def _plotly_js():
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs
    js = get_plotlyjs()
    # inside a <script> element, "</script" would end it; the bundle has none, but be sure
    return Markup(js.replace("</script", "<\\/script"))


def _pct(x, digits=1) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "-"
    return f"{100 * x:.{digits}f}%" if math.isfinite(x) else "-"


def build_context(df: pd.DataFrame, runs: list[dict], title: str, cost=None, slo=None,
                  peak_flops=None, peak_bandwidth=None, trends=None) -> dict:
    per_hour, currency = _cost_settings(cost)
    df, searches = _split_searches(df)
    df = with_cost(df, per_hour)
    several = len(runs) > 1
    tags = {r["label"]: f"R{i + 1}" for i, r in enumerate(runs)}
    df["run_tag"] = df["run"].map(tags).fillna("R?")
    run_index = {r["label"]: i for i, r in enumerate(runs)}
    percentile, bound_ms, slo_source = parse_slo(slo, df)
    figures: list[dict] = []

    def add(figure: dict, caption: str = "", wide: bool = False) -> str:
        fid = f"chart-{len(figures) + 1}"
        figures.append({"id": fid, "figure": figure, "caption": caption, "wide": wide})
        return fid

    measured = ok_rows(df, only_valid=False)
    best = best_under_slo(df, bound_ms, percentile)
    models = [model_section(df, measured, model, several, run_index, per_hour, currency, add,
                            best) for model in df["model"].drop_duplicates()]
    rooflines, roofline_note = roofline_section(measured, peak_flops, peak_bandwidth, add)
    charts = {"models": models, "rooflines": rooflines, "roofline_note": roofline_note,
              "trends": trends_section(trends, add), "searches": search_section(searches, add)}
    comparison = _comparison(runs, tags)
    return {
        "title": title,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": _version(),
        "runs": [_run_context(r, df, tags) for r in runs],
        "several_runs": several,
        "summary": _summary(df, runs),
        "problems": _all_problems(df, several, comparison),
        "comparison": comparison,
        "noise": _noise(runs),
        "changes": _changes(df) if several and comparison is None else [],
        "slo_text": f"p{percentile:g} ≤ {bound_ms:g} ms", "slo_source": slo_source,
        "best": [_best_row(r, several, percentile) for _, r in best.iterrows()],
        "glance": _glance(measured, several),
        **charts,
        "figures": {f["id"]: f for f in figures},
        "figures_json": {f["id"]: f["figure"] for f in figures},
        "cost_given": bool(per_hour), "currency": currency,
        "table": table(df, several),
        "not_run": not_run(df, several),
    }


def _split_searches(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A search's own row repeats its winner's measurement: it has the Search section, and
    every other section sees its trials as the cells they are."""
    if "search_role" not in df:
        return df, df.iloc[0:0]
    searched = df["search_role"] == "search"
    return df[~searched].reset_index(drop=True), df[searched]


def _all_problems(df: pd.DataFrame, several: bool, comparison) -> list[dict]:
    problems = _problems(df, several)
    if comparison is not None:      # the gate's verdicts replace the simple change flags
        problems = sorted(comparison["problems"] + [p for p in problems
                                                    if not p["what"].startswith("slower")],
                          key=lambda p: {"fail": 0, "warn": 1, "info": 2}[p["level"]])
    return problems


def _version() -> str:
    return __version__


def _run_context(run: dict, df: pd.DataFrame, tags: dict) -> dict:
    prov = run.get("provenance") or {}
    rows = df[df["run"] == run["label"]]
    gpu = prov.get("gpu") if isinstance(prov.get("gpu"), Mapping) else {}
    gpus = gpu.get("gpus") if isinstance(gpu.get("gpus"), list) else []
    gpu_text = ", ".join(str(g.get("name", g)) if isinstance(g, Mapping) else str(g)
                         for g in gpus) or ("none" if gpu else "-")
    if gpu.get("driver"):
        gpu_text += f" (driver {gpu['driver']})"
    git = prov.get("git") if isinstance(prov.get("git"), Mapping) else None
    commit = "-"
    if git and git.get("commit"):
        commit = str(git["commit"])[:12] + (" (uncommitted changes)" if git.get("dirty") else "")
    versions = prov.get("versions") if isinstance(prov.get("versions"), Mapping) else {}
    argv = prov.get("argv")
    return {
        "label": run["label"], "tag": tags.get(run["label"], "R?"),
        "name": run.get("name"), "path": run.get("path") or "-",
        "partial": bool(run.get("partial")),
        "host": prov.get("host") or "-", "platform": prov.get("platform") or "-",
        "cpu": f"{prov.get('cpu_model') or '-'} ({prov.get('cpu_count_physical') or '?'} cores, "
               f"{prov.get('cpu_count_logical') or '?'} threads)",
        "memory": f"{prov['memory_gb']} GiB" if prov.get("memory_gb") else "-",
        "python": prov.get("python") or "-", "gpu": gpu_text,
        "cuda_visible_devices": gpu.get("cuda_visible_devices"),
        "commit": commit, "versions": sorted((str(k), str(v)) for k, v in versions.items()),
        "argv": " ".join(str(a) for a in argv) if isinstance(argv, list) else (argv or "-"),
        "start": prov.get("start_time") or "-", "end": prov.get("end_time") or "-",
        "counts": {s: int((rows["status"] == s).sum()) for s in ("passed", "failed", "skipped")},
        "cells": len(rows),
    }


def _summary(df: pd.DataFrame, runs: list[dict]) -> dict:
    def uniq(col):
        return [str(x) for x in df[col].dropna().drop_duplicates()] if col in df else []
    verdicts = df["slo_verdict"].dropna().value_counts().to_dict()
    return {
        "cells": len(df),
        "passed": int((df["status"] == "passed").sum()),
        "failed": int((df["status"] == "failed").sum()),
        "skipped": int((df["status"] == "skipped").sum()),
        "invalid": int(((df["status"] == "passed") & ~df["valid"].astype(bool)).sum()),
        "models": uniq("model"), "runtimes": uniq("runtime_label"), "devices": uniq("device"),
        "precisions": uniq("precision"), "workloads": uniq("workload"),
        "serving": uniq("serving_label"),
        "batch_sizes": [str(b) for b in sorted(df["batch_size"].dropna().unique())],
        "hosts": uniq("host"),
        "slo_verdicts": {k: int(verdicts.get(k, 0)) for k in ("pass", "fail", "undetermined")
                         if verdicts.get(k)},
    }


def _problems(df: pd.DataFrame, several: bool) -> list[dict]:
    out = []

    def who(r):
        return (f"{r['run_tag']} " if several else "") + f"{r['model']} [{r['cell_label']}]"

    for _, r in df.iterrows():
        if r["status"] == "failed":
            out.append({"level": "fail", "what": "failed", "cell": who(r),
                        "detail": first_line(r["reason"]) or "failed"})
    for _, r in df.iterrows():
        if r["status"] == "passed" and r["slo_verdict"] == "fail":
            if r["slo_percentile"] == r["slo_percentile"]:
                detail = (f"p{r['slo_percentile']:g} bound {fmt(r['slo_bound_ms'])} ms: "
                          f"{_count(r['slo_overlatency'])} of {_count(r['slo_queries'])} "
                          f"queries over")
            else:           # a generative SLO: several bounds, judged one by one
                detail = f"{r['slo_reason'] or 'a bound is over'} ({_count(r['slo_queries'])} requests)"
            out.append({"level": "fail", "what": "SLO not met", "cell": who(r), "detail": detail})
    for _, r in df.iterrows():
        if r["status"] == "passed" and not r["valid"]:
            out.append({"level": "warn", "what": "invalid measurement", "cell": who(r),
                        "detail": r["validity_reasons"] or "flagged invalid"})
        errs = (r["errors"] or 0) + (r["timeouts"] or 0) if r["errors"] == r["errors"] else 0
        if r["status"] == "passed" and errs and errs == errs:
            out.append({"level": "warn", "what": "query errors", "cell": who(r),
                        "detail": f"{int(r['errors'] or 0)} errors, {int(r['timeouts'] or 0)} "
                                  f"timeouts"})
        if r["status"] == "passed" and r["slo_verdict"] == "undetermined":
            out.append({"level": "warn", "what": "SLO undetermined", "cell": who(r),
                        "detail": r["slo_reason"] if r["slo_percentile"] != r["slo_percentile"]
                        and r["slo_reason"] else
                        f"{_count(r['slo_queries'])} queries were too few for a "
                        f"verdict at {_pct(r['slo_confidence'], 0)} confidence"})
        if r["status"] == "passed" and r["host_contended"] is True:
            out.append({"level": "warn", "what": "host busy", "cell": who(r),
                        "detail": f"other processes used {fmt(r['other_cpu_cores'])} CPU cores "
                                  f"during the measurement: its numbers are disturbed"})
        if r["check_ok"] is False:
            out.append({"level": "warn", "what": "output check", "cell": who(r),
                        "detail": f"max relative error {fmt(r['max_rel_err'])}"})
    if several:
        slower = [c for c in _changes(df) if c["flag"] == "slower"]
        for change in slower[:MAX_CHANGES_LISTED]:
            out.append({"level": "warn", "what": f"slower in {change['to']}",
                        "cell": change["cell"], "detail": change["text"]})
        if len(slower) > MAX_CHANGES_LISTED:
            out.append({"level": "warn", "what": "slower in a later run",
                        "cell": f"{len(slower) - MAX_CHANGES_LISTED} more cell(s)",
                        "detail": "see Changes between runs"})
    skipped = int((df["status"] == "skipped").sum())
    if skipped:
        out.append({"level": "info", "what": "skipped", "cell": f"{skipped} cell(s)",
                    "detail": "see Skipped and failed cells for the reasons"})
    order = {"fail": 0, "warn": 1, "info": 2}
    return sorted(out, key=lambda p: order[p["level"]])


def _count(x) -> int:
    """A count from the frame: NaN and None are 0."""
    return int(x) if x is not None and x == x else 0


def _changes(df: pd.DataFrame) -> list[dict]:
    """Cells measured in more than one run: the last run against the first, p50 and throughput.
    Flagged only where the p50 confidence intervals do not overlap and the change is >= 5%."""
    rows = ok_rows(df, only_valid=False)
    out = []
    for cid, group in rows.groupby("id", sort=False):
        if group["run"].nunique() < 2:
            continue
        group = group.sort_values("run_index")
        a, b = group.iloc[0], group.iloc[-1]
        ratio = b["p50_ms"] / a["p50_ms"] if a["p50_ms"] else math.nan
        tput = b["samples_per_s"] / a["samples_per_s"] if a["samples_per_s"] else math.nan
        separate = (b["p50_lower_ms"] > a["p50_upper_ms"]) or (b["p50_upper_ms"] < a["p50_lower_ms"])
        flag = ""
        if separate and ratio == ratio and abs(ratio - 1) >= 0.05:
            flag = "slower" if ratio > 1 else "faster"
        out.append({"cell": f"{b['model']} [{b['cell_label']}]", "from": a["run_tag"],
                    "to": b["run_tag"], "p50_a": a["p50_ms"], "p50_b": b["p50_ms"],
                    "ratio": ratio, "tput_ratio": tput, "flag": flag,
                    "change": _signed_pct(ratio),
                    "text": f"p50 {fmt(a['p50_ms'])} → {fmt(b['p50_ms'])} ms "
                            f"({_signed_pct(ratio)}, {a['run_tag']} → {b['run_tag']}); "
                            f"confidence intervals do not overlap"})
    out.sort(key=lambda c: -abs(math.log(c["ratio"])) if c["ratio"] and c["ratio"] == c["ratio"]
             else 0)
    return out


def _comparison(runs: list[dict], tags: dict) -> dict | None:
    """The verdicts of the last run that was compared with a baseline (or has paired cells):
    rows for the table, and problems for the summary."""
    found = next(((r, r["comparison"]) for r in reversed(runs) if r.get("comparison")), None)
    if found is None:
        return None
    run, c = found
    rows, problems = [], []
    for e in c.get("verdicts") or []:
        for m in e.get("metrics") or []:
            rows.append({"verdict": e.get("verdict"), "metric_verdict": m.get("verdict"),
                         "cell": e.get("cell"), "mode": e.get("mode"), "metric": m.get("metric"),
                         "threshold": m.get("threshold"), "change": _signed_pct(m.get("ratio")),
                         "ratio": m.get("ratio"),
                         "interval": (f"{_signed_pct(m['lo'])} .. {_signed_pct(m['hi'])}"
                                      if m.get("lo") and m.get("hi") else "-"),
                         "reason": m.get("reason") or ""})
        if e.get("verdict") == "regression":
            worst = [m["reason"] for m in e.get("metrics") or [] if m.get("verdict") == "regression"]
            gated = e.get("mode") == "paired" or (c.get("gated") and c.get("enabled", True))
            problems.append({"level": "fail" if gated else "warn",
                             "what": f"regression ({e.get('mode')})" + ("" if gated
                                                                          else ", not gated"),
                             "cell": e.get("cell"), "detail": "; ".join(worst)})
        elif e.get("verdict") == "undetermined":
            why = [m["reason"] for m in e.get("metrics") or [] if m.get("verdict") == "undetermined"]
            problems.append({"level": "warn", "what": f"undetermined ({e.get('mode')})",
                             "cell": e.get("cell"), "detail": "; ".join(why)})
    for m in c.get("mismatch") or []:
        problems.append({"level": "warn", "what": "differs from the baseline", "cell": m["what"],
                         "detail": f"{m['baseline']} → {m['new']}"
                                   + (": verdicts not gated" if not c.get("gated") else "")})
    order = {"regression": 0, "undetermined": 1, "improvement": 2, "no change": 3}
    rows.sort(key=lambda r: (order.get(r["verdict"], 4), r["cell"] or ""))
    base = c.get("baseline") or {}
    return {"headline": headline(c), "run": tags.get(run["label"], ""), "rows": rows,
            "problems": problems, "failed": bool(c.get("failed")),
            "regressions": (c.get("counts") or {}).get("regression", 0),
            "baseline": base.get("label"), "baseline_path": base.get("path"),
            "only_in_baseline": c.get("only_in_baseline") or [],
            "only_in_new": c.get("only_in_new") or []}


def _noise(runs: list[dict]) -> list[dict]:
    """The last run's noise split per cell and metric (results/noise.py), for its table."""
    entries = next((r["noise"] for r in reversed(runs) if r.get("noise")), None) or []
    rows = []
    for e in entries:
        limits = {g["metric"]: g for g in e.get("gate") or []}
        for metric, s in e["metrics"].items():
            g = limits.get(metric)
            note = ""
            if g is not None:
                note = (f"gate {g['limit']:.0%}: " + ("resolved" if g["resolution"] < g["limit"]
                        else f"below the resolution; {g['runs_needed'] or 'over 200'} runs "
                             f"per side would resolve it"))
            rows.append({"cell": e["cell"], "runs": e["runs"],
                         "kind": "fresh processes" if e["fresh"] else "repeats",
                         "metric": metric, "value": f"{s['value']:.4g}",
                         "interval": f"{s['lower']:.4g} .. {s['upper']:.4g}",
                         "total": _pct(s["total_sd"]), "within": _pct(s["within_sd"]),
                         "between": _pct(s["between_sd"]), "resolution": _pct(s["resolution"]),
                         "gate": note})
    return rows


def _signed_pct(ratio) -> str:
    if ratio is None or ratio != ratio:
        return "-"
    return f"{100 * (ratio - 1):+.1f}%"


def _best_row(r, several: bool, percentile: float) -> dict:
    key = f"p{percentile:g}"
    return {"model": r["model"], "device": r["device"], "config": r["cell_label"],
            "run": r["run_tag"] if several else "", "samples_per_s": r["samples_per_s"],
            "value": r.get(f"{key}_ms"), "upper": r.get(f"{key}_upper_ms"),
            "verdict": r["slo_check"],
            "confidence": r["slo_check_confidence"], "basis": r["slo_check_basis"],
            "candidates": int(r["candidates"]), "hover": r["config"]}


def _glance(measured: pd.DataFrame, several: bool) -> list[dict]:
    out = []
    for model, group in measured.groupby("model", sort=False):
        tp = group.loc[group["samples_per_s"].idxmax()] if group["samples_per_s"].notna().any() \
            else None
        lat = group.loc[group["p99_ms"].idxmin()] if group["p99_ms"].notna().any() else None
        tag = (lambda r: f" ({r['run_tag']})" if several else "")
        out.append({"model": model, "anchor": anchor(model), "cells": len(group),
                    "best_tp": tp["samples_per_s"] if tp is not None else None,
                    "best_tp_config": (tp["cell_label"] + tag(tp)) if tp is not None else "-",
                    "best_p99": lat["p99_ms"] if lat is not None else None,
                    "best_p99_config": (lat["cell_label"] + tag(lat)) if lat is not None else "-"})
    return out


