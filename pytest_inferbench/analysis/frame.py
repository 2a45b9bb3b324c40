"""Run files as a pandas DataFrame: one row per cell and run, a column per axis and metric.

    df = load_results(".inferbench/runs")                 # a directory of run files
    df = load_results(["last-night.json", "today.json"])  # or files (or journals)

Columns (missing data is NaN/None, never an error, so older and newer run files both read):

- run: `run` (a label that tells runs apart: name @ host, start time), `run_id` (the file's
  stem), `run_index`, `run_name`, `run_path`, `host`, `start_time`, `commit`, `dirty`
- cell: `id`, `cell_label` (the params part of the id), `status`, `reason`, `valid`,
  `validity_reasons`, `spec`, `spec_name`, `model`, `family`, `runtime`, `runtime_label`,
  `runtime_options`, `device`, `device_type`, `precision`, `batch_size`, `threads`, `scenario`,
  `workload`, `arrival`, `rate`, `concurrency`, `serving`, `serving_label`, `config` (every
  axis in one readable string)
- latency (ms): `n`, `mean_ms`, `std_ms`, `min_ms`, `max_ms`, `confidence`, and for each
  percentile P (p50, p90, p95, p99, p99.9 at least): `P_ms`, `P_lower_ms`, `P_upper_ms`
- throughput: `queries_per_s`, `samples_per_s`; stop: `stop_reason`, `ci_half_width_rel`;
  `duration_s`, `wall_s`
- process: `cpu_cores_used`, `cpu_percent_system`, `peak_rss_mb`, `other_cpu_cores` and
  `host_contended` (other processes kept the host's CPUs busy during the window)
- GPU: `gpu_name`, `gpu_util_pct`, `gpu_util_max_pct`, `gpu_memory_mb`, `gpu_power_w`,
  `energy_j`, `energy_per_sample_j`
- serving breakdown (Triton): `queue_ms`, `compute_ms`, `compute_infer_ms`, `server_ms`,
  `other_ms`, `avg_batch`
- load (open loop): `target_rate`, `achieved_rate`, `send_lag_p99_ms`, `late_fraction`,
  `max_rate`, `knee_rate`
- SLO: `slo_verdict`, `slo_percentile`, `slo_bound_ms`, `slo_confidence`, `slo_queries`,
  `slo_overlatency`, `slo_reason` (a generative SLO has several bounds: percentile and bound
  are NaN, the reason names them)
- errors: `errors`, `timeouts`, `attempted`, `error_rate`
- generative serving (OpenAI-compatible): `ttft_p50_ms`, `ttft_p99_ms`, `itl_p50_ms`,
  `itl_p99_ms`, `tpot_p50_ms`, `tpot_p99_ms`, `e2e_p50_ms`, `e2e_p99_ms` (with `_lower`/
  `_upper` bounds of the p99s), `requests_per_s`, `output_tokens_per_s`, `total_tokens_per_s`,
  `goodput_per_s`, `goodput_share`, `input_tokens_mean`, `output_tokens_mean`,
  `client_lag_p99_ms`
- model and runtime: `parameters`, `check_ok`, `max_rel_err`, `conversion_s`,
  `runtime_version`
- raw (objects, for the report): `cell`, `histogram` (latency_ms.histogram or None),
  `load_steps`; configuration search: `search_role` ("search" or "trial") and `search`

Why one module: the column list and the row builder change together, column for column.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..results.cells import search_columns, trial_name
from ..results.runfile import RunFileError, load_run
from ..store.url import resolve_url

STANDARD_PERCENTILES = ("p50", "p90", "p95", "p99", "p99.9")


class ResultsError(ValueError):
    """A source that is not a readable run file (or a directory without any)."""


@dataclass
class Run:
    """One run file: its name, provenance and results (plain dicts)."""
    name: str
    provenance: dict
    results: list[dict]
    path: str | None = None
    run_id: str = ""
    label: str = ""
    partial: bool = False
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- reading

def run_files_in(directory: Path) -> list[Path]:
    """Run files in a directory: `*.json`, plus journals of sessions that left no run file."""
    files = sorted(p for p in directory.glob("*.json") if not p.name.startswith("."))
    stems = {p.stem for p in files}
    for journal in sorted(directory.glob("*.partial.jsonl")):
        if journal.name.removesuffix(".partial.jsonl") not in stems:
            files.append(journal)
    return files


def read_runs(sources) -> list[Run]:
    """Paths (files or directories), results store URLs (every run in the store), run
    documents (dicts) or Runs -> list of Runs, in order."""
    if isinstance(sources, (str, Path, Mapping, Run)):
        sources = [sources]
    runs: list[Run] = []
    seen: set[Path] = set()         # a file named twice (itself and in its directory) counts once
    for source in sources:
        if isinstance(source, Run):
            runs.append(source)
            continue
        if isinstance(source, Mapping):
            runs.append(_run_from_doc(dict(source), None))
            continue
        if isinstance(source, str) and "://" in source:     # a results store
            runs.extend(_run_from_doc(doc, None) for doc in _store_documents(source))
            continue
        path = Path(source)
        if path.is_dir():
            files = run_files_in(path)
            if not files:
                raise ResultsError(f"{path}: no run files (*.json) in this directory")
        else:
            files = [path]
        for f in files:
            key = f.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                doc = load_run(f)
            except RunFileError as exc:
                raise ResultsError(str(exc)) from None
            except (ValueError, TypeError) as exc:   # a journal line that is not JSON, a bad field
                raise ResultsError(f"{f}: not a readable run file ({_first_line(exc)})") from None
            runs.append(_run_from_doc(doc, f))
    _label_runs(runs)
    return runs


def _store_documents(url: str) -> list[dict]:
    from ..store.db import ResultStore, StoreError  # lazy: sqlalchemy
    try:
        store = ResultStore.open(resolve_url(url, Path.cwd()))
        try:
            return store.documents()
        finally:
            store.close()
    except StoreError as exc:
        raise ResultsError(str(exc)) from None


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _run_from_doc(doc: dict, path: Path | None) -> Run:
    results = [r.to_json() if hasattr(r, "to_json") else dict(r) for r in doc.get("results", [])]
    run_id = ""
    if path is not None:
        run_id = path.name.removesuffix(".partial.jsonl").removesuffix(".json")
    extra = {"comparison": doc["comparison"]} if isinstance(doc.get("comparison"), dict) else {}
    return Run(name=str(doc.get("name") or "session"), provenance=dict(doc.get("provenance") or {}),
               results=results, path=str(path) if path is not None else None, run_id=run_id,
               partial=bool(doc.get("partial")), extra=extra)


def _label_runs(runs: list[Run]) -> None:
    """Give each run a label that tells it apart: "name @ host, 2025-01-31 12:00"."""
    for i, run in enumerate(runs):
        run.run_id = run.run_id or f"run{i + 1}"
        if run.label:
            continue
        prov = run.provenance
        start = str(prov.get("start_time") or "")[:16].replace("T", " ")
        host = prov.get("host") or "?"
        run.label = f"{run.name} @ {host}" + (f", {start}" if start else "")
        if run.partial:
            run.label += " (partial)"
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
    for run in runs:
        if seen[run.label] > 1:
            run.label = f"{run.label} [{run.run_id}]"
    labels = [r.label for r in runs]
    for i, run in enumerate(runs):
        if labels.count(run.label) > 1:
            run.label = f"{run.label} #{i + 1}"


# ----------------------------------------------------------------------------- the frame

def load_results(paths) -> pd.DataFrame:
    """One row per cell and run from run files, directories of run files, results store URLs
    (`sqlite:///.inferbench/results.db`, `postgresql://...`) or run documents.

    Raises ResultsError (a ValueError) for a file that is not a readable run file."""
    runs = read_runs(paths)
    return frame_from_runs(runs)


def frame_from_runs(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for index, run in enumerate(runs):
        for result in run.results:
            rows.append(_row(run, index, result))
    df = pd.DataFrame(rows, columns=_columns(rows))
    df.attrs["runs"] = [_run_meta(r) for r in runs]
    return df


def _run_meta(run: Run) -> dict:
    return {"label": run.label, "run_id": run.run_id, "name": run.name, "path": run.path,
            "partial": run.partial, "provenance": run.provenance,
            "comparison": run.extra.get("comparison")}


_BASE_COLUMNS = [
    "run", "run_id", "run_index", "run_name", "run_path", "host", "start_time", "commit", "dirty",
    "id", "cell_label", "status", "reason", "valid", "validity_reasons", "spec", "spec_name",
    "model", "family", "runtime", "runtime_label", "runtime_options", "device", "device_type",
    "precision", "batch_size", "threads", "scenario", "workload", "arrival", "rate",
    "concurrency", "serving", "serving_label", "config",
    "n", "mean_ms", "std_ms", "min_ms", "max_ms", "confidence",
]
_AFTER_PERCENTILES = [
    "queries_per_s", "samples_per_s", "stop_reason", "ci_half_width_rel", "duration_s", "wall_s",
    "cpu_cores_used", "cpu_percent_system", "peak_rss_mb", "other_cpu_cores", "host_contended",
    "gpu_name", "gpu_util_pct", "gpu_util_max_pct", "gpu_memory_mb", "gpu_power_w", "energy_j",
    "energy_per_sample_j",
    "queue_ms", "compute_ms", "compute_infer_ms", "server_ms", "other_ms", "avg_batch",
    "target_rate", "achieved_rate", "send_lag_p99_ms", "late_fraction", "max_rate", "knee_rate",
    "slo_verdict", "slo_percentile", "slo_bound_ms", "slo_confidence", "slo_queries",
    "slo_overlatency", "slo_reason",
    "errors", "timeouts", "attempted", "error_rate",
    "parameters", "check_ok", "max_rel_err", "conversion_s", "runtime_version",
    "ttft_p50_ms", "ttft_p99_ms", "ttft_p99_lower_ms", "ttft_p99_upper_ms",
    "itl_p50_ms", "itl_p99_ms", "itl_p99_lower_ms", "itl_p99_upper_ms",
    "tpot_p50_ms", "tpot_p99_ms", "tpot_p99_lower_ms", "tpot_p99_upper_ms",
    "e2e_p50_ms", "e2e_p99_ms", "e2e_p99_lower_ms", "e2e_p99_upper_ms",
    "requests_per_s", "output_tokens_per_s", "total_tokens_per_s", "goodput_per_s",
    "goodput_share", "input_tokens_mean", "output_tokens_mean", "client_lag_p99_ms",
    "cell", "histogram", "load_steps", "search_role", "search",
]


def _columns(rows: list[dict]) -> list[str]:
    keys = list(STANDARD_PERCENTILES)
    for row in rows:
        for k in row.get("_percentiles", ()):
            if k not in keys:
                keys.append(k)
    keys.sort(key=_percentile_number)
    pct_cols = [c for k in keys for c in (f"{k}_ms", f"{k}_lower_ms", f"{k}_upper_ms")]
    for row in rows:
        row.pop("_percentiles", None)
    return _BASE_COLUMNS + pct_cols + _AFTER_PERCENTILES


def _percentile_number(key: str) -> float:
    try:
        return float(key[1:])
    except ValueError:
        return math.inf


NAN = float("nan")


def _num(value) -> float:
    """A number, or NaN for None/garbage."""
    if value is None or isinstance(value, bool):
        return NAN if value is None else float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return NAN


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, Mapping):
            return default
        d = d.get(k)
        if d is None:
            return default
    return d


def runtime_label(name, options) -> str:
    if not name:
        return "?"
    if not options:
        return str(name)
    inner = ",".join(f"{k}" if v is True else f"{k}={v}" for k, v in options.items())
    return f"{name}({inner})"


def workload_label(workload: Mapping | None, scenario: str | None) -> str:
    w = workload or {}
    s = w.get("scenario") or scenario or "?"
    if s == "server":
        rate = w.get("rate")
        what = f"{w.get('arrival', 'poisson')}" + (f" {rate:g}/s" if isinstance(rate, (int, float))
                                                   else "")
        return f"server {what}"
    if s == "concurrency":
        return f"concurrency {w.get('concurrency')}"
    if s == "ramp":
        return f"ramp {w.get('rate')}+{w.get('step')}/s"
    if s == "capacity" and isinstance(w.get("slo"), Mapping):
        ((key, bound),) = list(w["slo"].items())[:1] or [("?", None)]
        return f"capacity {key}<={_ms(bound)}"
    return str(s)


def _ms(seconds) -> str:
    return f"{seconds * 1e3:g}ms" if isinstance(seconds, (int, float)) else str(seconds)


def serving_label(serving: Mapping | None) -> str:
    s = serving or {}
    system = s.get("system") or "inprocess"
    if system == "triton":
        parts = [s.get("protocol", "http")]
        if s.get("dynamic_batching", True):
            delay = s.get("max_queue_delay")
            parts.append(f"dyn.batch {delay * 1e6:g}us" if isinstance(delay, (int, float))
                         else "dyn.batch")
        else:
            parts.append("no dyn.batch")
        if (s.get("instances") or 1) != 1:
            parts.append(f"x{s['instances']}")
        return f"triton({', '.join(parts)})"
    if system == "inprocess" and (s.get("instances") or 1) != 1:
        return f"inprocess x{s['instances']}"
    if system == "endpoint":
        return f"endpoint({s.get('protocol', 'http')}, {s.get('model')})"
    return str(system)


def threads_label(threads) -> str | None:
    if not isinstance(threads, Mapping):
        return None if threads is None else str(threads)
    intra, inter = threads.get("intra"), threads.get("inter")
    if intra is None and inter is None:
        return None
    return f"intra {intra or 'auto'}" + (f", inter {inter}" if inter else "")


def _row(run: Run, index: int, r: dict) -> dict:
    cell = r.get("cell") if isinstance(r.get("cell"), Mapping) else {}
    prov = run.provenance
    lat = r.get("latency_ms") if isinstance(r.get("latency_ms"), Mapping) else {}
    rid = str(r.get("id") or "")
    name = trial_name(r) or rid.partition("::")[2] or rid
    cell_label = name[name.find("[") + 1:-1] if name.endswith("]") and "[" in name else name
    model_spec = cell.get("model") if isinstance(cell.get("model"), Mapping) else {}
    model_info = r.get("model") if isinstance(r.get("model"), Mapping) else {}
    runtime_info = r.get("runtime") if isinstance(r.get("runtime"), Mapping) else {}
    workload = cell.get("workload") if isinstance(cell.get("workload"), Mapping) else {}
    serving_cell = cell.get("serving") if isinstance(cell.get("serving"), Mapping) else {}
    device = cell.get("device") or runtime_info.get("device")
    batch = cell.get("batch_size") or r.get("batch_size") or 1
    runtime = cell.get("runtime") or runtime_info.get("name")
    if serving_cell.get("system") == "openai":      # the server decides what runs the model
        runtime = runtime_info.get("name") or "server"
    rt_label = runtime_label(runtime, cell.get("runtime_options") or {})
    model = cell.get("model_label") or model_info.get("label") or (name.split("[")[0] or "?")
    row: dict[str, Any] = {
        "run": run.label, "run_id": run.run_id, "run_index": index, "run_name": run.name,
        "run_path": run.path, "host": prov.get("host"), "start_time": prov.get("start_time"),
        "commit": _get(prov, "git", "commit"), "dirty": _get(prov, "git", "dirty"),
        "id": rid, "cell_label": cell_label, "status": r.get("status") or "passed",
        "reason": r.get("reason"), "valid": bool(r.get("valid", True)),
        "validity_reasons": _validity(r),
        "spec": cell.get("spec"), "spec_name": cell.get("spec_name"),
        "model": str(model), "family": model_spec.get("family") or model_spec.get("kind"),
        "runtime": runtime, "runtime_label": rt_label,
        "runtime_options": json.dumps(cell.get("runtime_options") or {}, sort_keys=True),
        "device": device, "device_type": str(device).split(":")[0] if device else None,
        "precision": cell.get("precision"), "batch_size": int(batch),
        "threads": threads_label(cell.get("threads")),
        "scenario": workload.get("scenario") or r.get("scenario"),
        "workload": workload_label(workload, r.get("scenario")),
        "arrival": workload.get("arrival") if workload.get("scenario") == "server" else None,
        "rate": _num(workload.get("rate")), "concurrency": _num(workload.get("concurrency")),
        "serving": serving_cell.get("system") or _get(r, "serving", "system") or "inprocess",
        "serving_label": serving_label(serving_cell or r.get("serving")),
        "n": int(lat.get("n") or 0), "mean_ms": _num(lat.get("mean")),
        "std_ms": _num(lat.get("std")), "min_ms": _num(lat.get("min")),
        "max_ms": _num(lat.get("max")), "confidence": _num(lat.get("confidence")),
    }
    row["config"] = config_text(row)
    pcts = lat.get("percentiles") if isinstance(lat.get("percentiles"), Mapping) else {}
    for key in STANDARD_PERCENTILES:
        row[f"{key}_ms"] = row[f"{key}_lower_ms"] = row[f"{key}_upper_ms"] = NAN
    for key, p in pcts.items():
        p = p if isinstance(p, Mapping) else {"value": p}
        row[f"{key}_ms"] = _num(p.get("value"))
        row[f"{key}_lower_ms"] = _num(p.get("lower"))
        row[f"{key}_upper_ms"] = _num(p.get("upper"))
    row["_percentiles"] = list(pcts)

    tp = r.get("throughput") or {}
    stop = r.get("stop") or {}
    proc = r.get("process") or {}
    gpu = r.get("gpu") if isinstance(r.get("gpu"), Mapping) else {}
    bd = _get(r, "serving", "breakdown") or {}
    load = r.get("load") if isinstance(r.get("load"), Mapping) else {}
    slo = r.get("slo") if isinstance(r.get("slo"), Mapping) else {}
    errs = r.get("errors") if isinstance(r.get("errors"), Mapping) else {}
    check = model_info.get("check") if isinstance(model_info.get("check"), Mapping) else {}
    samples_done = row["n"] * row["batch_size"]
    energy_j = _num(gpu.get("energy_j"))
    eps = _num(gpu.get("energy_per_sample_j"))
    if math.isnan(eps) and not math.isnan(energy_j) and samples_done:
        eps = energy_j / samples_done
    row.update({
        "queries_per_s": _num(tp.get("queries_per_s")),
        "samples_per_s": _num(tp.get("samples_per_s")),
        "stop_reason": stop.get("reason"), "ci_half_width_rel": _num(stop.get("ci_half_width_rel")),
        "duration_s": _num(r.get("duration_s")), "wall_s": _num(r.get("wall_s")),
        "cpu_cores_used": _num(proc.get("cpu_cores_used")),
        "cpu_percent_system": _num(proc.get("cpu_percent_system")),
        "peak_rss_mb": _num(proc.get("peak_rss_mb")),
        "other_cpu_cores": _num(proc.get("other_cpu_cores")),
        "host_contended": proc.get("host_contended"),
        "gpu_name": gpu.get("name"),
        "gpu_util_pct": _num(_get(gpu, "utilization_pct", "mean")),
        "gpu_util_max_pct": _num(_get(gpu, "utilization_pct", "max")),
        "gpu_memory_mb": _num(_get(gpu, "memory_used_mb", "max")),
        "gpu_power_w": _num(_get(gpu, "power_w", "mean")),
        "energy_j": energy_j, "energy_per_sample_j": eps,
        "queue_ms": _num(bd.get("queue_ms")), "compute_ms": _num(bd.get("compute_ms")),
        "compute_infer_ms": _num(bd.get("compute_infer_ms")),
        "server_ms": _num(bd.get("server_ms")), "other_ms": _num(bd.get("other_ms")),
        "avg_batch": _num(bd.get("avg_batch")),
        "target_rate": _num(load.get("target_rate")),
        "achieved_rate": _num(load.get("achieved_rate")),
        "send_lag_p99_ms": _num(_get(load, "send_lag_ms", "p99")),
        "late_fraction": _num(load.get("late_fraction")),
        "max_rate": _num(_rate(load.get("max_rate"))),
        "knee_rate": _num(_rate(load.get("knee_rate"))),
        "slo_verdict": slo.get("verdict"), "slo_percentile": _num(slo.get("percentile")),
        "slo_bound_ms": _num(slo.get("bound_ms")), "slo_confidence": _num(slo.get("confidence")),
        "slo_queries": _num(slo.get("queries")), "slo_overlatency": _num(slo.get("overlatency")),
        "slo_reason": slo.get("reason"),
        "errors": _num(errs.get("errors", load.get("errors"))),
        "timeouts": _num(errs.get("timeouts", load.get("timeouts"))),
        "attempted": _num(errs.get("attempted")), "error_rate": _num(errs.get("error_rate")),
        "parameters": _num(model_info.get("parameters")),
        "check_ok": check.get("ok"), "max_rel_err": _num(check.get("max_rel_err")),
        "conversion_s": _num(model_info.get("conversion_s")),
        "runtime_version": runtime_info.get("version"),
        "cell": cell or None,
        "histogram": lat.get("histogram") if isinstance(lat.get("histogram"), Mapping) else None,
        "load_steps": load.get("steps") if isinstance(load.get("steps"), list) else None,
        **search_columns(r),
    })
    row.update(_generative(r.get("generative")))
    return row


GENERATIVE_METRICS = ("ttft", "itl", "tpot", "e2e")


def _generative(g) -> dict:
    """The generative-serving columns (NaN for other cells)."""
    g = g if isinstance(g, Mapping) else {}
    out: dict[str, Any] = {}
    for metric in GENERATIVE_METRICS:
        pcts = _get(g, f"{metric}_ms", "percentiles") or {}
        for key in ("p50", "p99"):
            p = pcts.get(key) if isinstance(pcts.get(key), Mapping) else {}
            out[f"{metric}_{key}_ms"] = _num(p.get("value"))
            if key == "p99":
                out[f"{metric}_p99_lower_ms"] = _num(p.get("lower"))
                out[f"{metric}_p99_upper_ms"] = _num(p.get("upper"))
    goodput = g.get("goodput") if isinstance(g.get("goodput"), Mapping) else {}
    out.update({
        "requests_per_s": _num(g.get("requests_per_s")),
        "output_tokens_per_s": _num(g.get("output_tokens_per_s")),
        "total_tokens_per_s": _num(g.get("total_tokens_per_s")),
        "goodput_per_s": _num(goodput.get("requests_per_s")),
        "goodput_share": _num(goodput.get("share")),
        "input_tokens_mean": _num(_get(g, "tokens", "input", "mean")),
        "output_tokens_mean": _num(_get(g, "tokens", "output", "mean")),
        "client_lag_p99_ms": _num(_get(g, "send_lag_ms", "client", "p99")),
    })
    return out


def _rate(value):
    """A rate, or the best value of a search's bracket ({value|rate|lower,...})."""
    if isinstance(value, Mapping):
        for key in ("value", "rate", "lower"):
            if value.get(key) is not None:
                return value[key]
        return None
    return value


def _validity(r: dict) -> str | None:
    reasons = r.get("validity_reasons") or r.get("invalid_reasons") or _get(r, "load", "invalid_reasons")
    if isinstance(reasons, (list, tuple)):
        return "; ".join(str(x) for x in reasons) or None
    if reasons:
        return str(reasons)
    if r.get("valid", True) is False:
        late = _get(r, "load", "late_fraction")
        return ("the load generator fell behind" +
                (f" ({100 * late:.1f}% of sends late)" if isinstance(late, (int, float)) else ""))
    return None


def config_text(row: Mapping, sep: str = "\n") -> str:
    """Every axis of a cell, one `key: value` per line (for hover text and tables)."""
    parts = [("model", row.get("model")), ("runtime", row.get("runtime_label")),
             ("device", row.get("device")), ("precision", row.get("precision")),
             ("batch size", row.get("batch_size")), ("threads", row.get("threads")),
             ("workload", row.get("workload")), ("serving", row.get("serving_label"))]
    return sep.join(f"{k}: {v}" for k, v in parts if v is not None and v == v)


def ok_rows(df: pd.DataFrame, only_valid: bool = True) -> pd.DataFrame:
    """Passed rows with a measurement (and a valid load generator, unless only_valid=False)."""
    keep = (df["status"] == "passed") & (df["n"] > 0)
    if only_valid:
        keep &= df["valid"].astype(bool)
    return df[keep]

