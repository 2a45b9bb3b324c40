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

from ..core.result import Generative, Latency, Result
from ..core.scenarios import SCENARIOS
from ..core.sections import Gpu, Load
from ..results.cells import search_columns, trial_name
from ..results.runfile import FORMAT, RunFileError, load_run, parse_run
from ..store.url import resolve_url, shown

STANDARD_PERCENTILES = ("p50", "p90", "p95", "p99", "p99.9")


class ResultsError(ValueError):
    """A source that is not a readable run file (or a directory without any)."""


@dataclass
class Run:
    """One run file: its name, provenance and typed results."""
    name: str
    provenance: dict
    results: list[Result]
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
        if isinstance(source, Mapping):     # a document in memory: version 1 unless it says
            # ("path": where a reader found it, not part of the run)
            doc = {"format": FORMAT, "version": 1,
                   **{k: v for k, v in source.items() if k != "path"}}
            runs.append(_run_from_doc(_parsed(doc, "run document"), None))
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
            # the store keeps each run as recorded, of any version: one conversion for all
            return [parse_run(d, f"{shown(url)} run {d.get('store_run')}").as_doc()
                    for d in store.documents()]
        finally:
            store.close()
    except (StoreError, RunFileError) as exc:
        raise ResultsError(str(exc)) from None


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _parsed(doc: dict, where: str) -> dict:
    try:
        return parse_run(doc, where).as_doc()
    except RunFileError as exc:
        raise ResultsError(str(exc)) from None


def _run_from_doc(doc: dict, path: Path | None) -> Run:
    """A Run from a document parse_run gave (load_run, the store): its results are typed."""
    results = list(doc.get("results", []))
    run_id = ""
    if path is not None:
        run_id = path.name.removesuffix(".partial.jsonl").removesuffix(".json")
    extra = {"comparison": doc["comparison"]} if isinstance(doc.get("comparison"), dict) else {}
    if isinstance(doc.get("noise"), list):
        extra["noise"] = doc["noise"]
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
            "comparison": run.extra.get("comparison"), "noise": run.extra.get("noise")}


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


def _offers_rate(workload: Mapping) -> bool:
    """A scenario whose cells are about an arrival process at a fixed rate (server)."""
    kind = SCENARIOS.get(workload.get("scenario"))
    return kind is not None and kind.fixed_rate


def workload_label(workload: Mapping | None, scenario: str | None) -> str:
    """The report's label of a run file's workload (each scenario names its own:
    core/scenarios/); a scenario this version does not know, by its name."""
    w = workload or {}
    s = w.get("scenario") or scenario or "?"
    kind = SCENARIOS.get(s)
    return kind.report_label(w) if kind is not None else str(s)


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


def _row(run: Run, index: int, r: Result) -> dict:
    """One result's row: what it is (the cell), then its figures, section by section."""
    row = _identity(run, index, r)
    row["config"] = config_text(row)
    row.update(_latency_columns(r.latency_ms))
    for columns in (_run_columns, _host_columns, _gpu_columns, _serving_columns, _load_columns,
                    _slo_columns, _error_columns, _model_columns):
        row.update(columns(r))
    row["energy_per_sample_j"] = _energy_per_sample_j(row, r.gpu)
    row.update({"cell": r.cell or None,
                "histogram": r.latency_ms.histogram.model_dump() if r.latency_ms.histogram
                else None,
                "load_steps": [s.model_dump(mode="json") for s in r.load.steps]
                if r.load is not None and r.load.steps is not None else None,
                **search_columns(r)})
    row.update(_generative(r.generative))
    return row


def _cell_parts(r: Result) -> dict:
    """The cell's sections (the resolved spec Cell, JSON: its keys are spec/'s)."""
    cell = r.cell if isinstance(r.cell, Mapping) else {}
    part = (lambda key: cell.get(key) if isinstance(cell.get(key), Mapping) else {})
    return {"cell": cell, "model": part("model"), "workload": part("workload"),
            "serving": part("serving")}


def _identity(run: Run, index: int, r: Result) -> dict:
    c = _cell_parts(r)
    cell, workload, serving_cell = c["cell"], c["workload"], c["serving"]
    rid = r.id or ""
    name = trial_name(r) or rid.partition("::")[2] or rid
    device = cell.get("device") or r.runtime.device_name
    runtime = cell.get("runtime") or r.runtime.name
    if serving_cell.get("system") == "openai":      # the server decides what runs the model
        runtime = r.runtime.name or "server"
    model = cell.get("model_label") or r.model.label or (name.split("[")[0] or "?")
    scenario = workload.get("scenario") or r.scenario
    return {
        **_run_identity(run, index), "id": rid,
        "cell_label": name[name.find("[") + 1:-1] if name.endswith("]") and "[" in name
        else name,
        "status": r.status or "passed", "reason": r.reason, "valid": bool(r.valid),
        "validity_reasons": _validity(r),
        "spec": cell.get("spec"), "spec_name": cell.get("spec_name"),
        "model": str(model), "family": c["model"].get("family") or c["model"].get("kind"),
        "runtime": runtime,
        "runtime_label": runtime_label(runtime, cell.get("runtime_options") or {}),
        "runtime_options": json.dumps(cell.get("runtime_options") or {}, sort_keys=True),
        "device": device, "device_type": str(device).split(":")[0] if device else None,
        "precision": cell.get("precision"),
        "batch_size": int(cell.get("batch_size") or r.batch_size or 1),
        "threads": threads_label(cell.get("threads")), "scenario": scenario,
        "workload": workload_label(workload, r.scenario),
        "arrival": workload.get("arrival") if _offers_rate(workload) else None,
        "rate": _num(workload.get("rate")), "concurrency": _num(workload.get("concurrency")),
        "serving": serving_cell.get("system") or (r.serving.system if r.serving else None)
        or "inprocess",
        "serving_label": serving_label(serving_cell or _dump(r.serving)),
    }


def _run_identity(run: Run, index: int) -> dict:
    prov = run.provenance
    return {"run": run.label, "run_id": run.run_id, "run_index": index, "run_name": run.name,
            "run_path": run.path, "host": prov.get("host"), "start_time": prov.get("start_time"),
            "commit": _get(prov, "git", "commit"), "dirty": _get(prov, "git", "dirty")}


def _dump(section) -> dict:
    return section.model_dump(exclude_none=True) if section is not None else {}


def _latency_columns(lat: Latency) -> dict:
    row: dict[str, Any] = {"n": int(lat.n or 0), "mean_ms": _num(lat.mean),
                           "std_ms": _num(lat.std), "min_ms": _num(lat.min),
                           "max_ms": _num(lat.max), "confidence": _num(lat.confidence)}
    for key in STANDARD_PERCENTILES:
        row[f"{key}_ms"] = row[f"{key}_lower_ms"] = row[f"{key}_upper_ms"] = NAN
    for key, p in lat.percentiles.items():
        row[f"{key}_ms"] = _num(p.value)
        row[f"{key}_lower_ms"] = _num(p.lower)
        row[f"{key}_upper_ms"] = _num(p.upper)
    row["_percentiles"] = list(lat.percentiles)
    return row


def _run_columns(r: Result) -> dict:
    return {"queries_per_s": _num(r.throughput.queries_per_s),
            "samples_per_s": _num(r.throughput.samples_per_s),
            "stop_reason": r.stop.reason, "ci_half_width_rel": _num(r.stop.ci_half_width_rel),
            "duration_s": _num(r.duration_s), "wall_s": _num(r.wall_s)}


def _host_columns(r: Result) -> dict:
    proc = r.process
    return {"cpu_cores_used": _num(proc.cpu_cores_used),
            "cpu_percent_system": _num(proc.cpu_percent_system),
            "peak_rss_mb": _num(proc.peak_rss_mb), "other_cpu_cores": _num(proc.other_cpu_cores),
            "host_contended": proc.host_contended}


def _stat(stat, key: str) -> float:
    return _num(getattr(stat, key)) if stat is not None else NAN


def _gpu_columns(r: Result) -> dict:
    gpu = r.gpu or Gpu()
    return {"gpu_name": gpu.name,
            "gpu_util_pct": _stat(gpu.utilization_pct, "mean"),
            "gpu_util_max_pct": _stat(gpu.utilization_pct, "max"),
            "gpu_memory_mb": _stat(gpu.memory_used_mb, "max"),
            "gpu_power_w": _stat(gpu.power_w, "mean"), "energy_j": _num(gpu.energy_j)}


def _energy_per_sample_j(row: dict, gpu) -> float:
    eps = _num(gpu.energy_per_sample_j) if gpu is not None else NAN
    samples_done = row["n"] * row["batch_size"]
    if math.isnan(eps) and not math.isnan(row["energy_j"]) and samples_done:
        eps = row["energy_j"] / samples_done
    return eps


def _serving_columns(r: Result) -> dict:
    # the server's statistics split: its keys are the server's (serving/statistics.py)
    bd = (r.serving.breakdown if r.serving is not None else None) or {}
    return {key: _num(bd.get(key)) for key in ("queue_ms", "compute_ms", "compute_infer_ms",
                                               "server_ms", "other_ms", "avg_batch")}


def _load_columns(r: Result) -> dict:
    load = r.load or Load()
    return {"target_rate": _num(load.target_rate), "achieved_rate": _num(load.achieved_rate),
            "send_lag_p99_ms": _num(load.send_lag_ms.p99 if load.send_lag_ms else None),
            "late_fraction": _num(load.late_fraction),
            "max_rate": _num(load.max_rate), "knee_rate": _num(load.knee_rate)}


def _slo_columns(r: Result) -> dict:
    slo = r.slo
    if slo is None:
        return {k: (None if k in ("slo_verdict", "slo_reason") else NAN) for k in _SLO_COLUMNS}
    return {"slo_verdict": slo.verdict, "slo_percentile": _num(slo.percentile),
            "slo_bound_ms": _num(slo.bound_ms), "slo_confidence": _num(slo.confidence),
            "slo_queries": _num(slo.queries), "slo_overlatency": _num(slo.overlatency),
            "slo_reason": slo.reason}


_SLO_COLUMNS = ("slo_verdict", "slo_percentile", "slo_bound_ms", "slo_confidence",
                "slo_queries", "slo_overlatency", "slo_reason")


def _error_columns(r: Result) -> dict:
    errs, load = r.errors, r.load
    # cells measured before `errors` existed counted failures in `load` only
    errors = errs.errors if errs is not None else (load.errors if load is not None else None)
    timeouts = errs.timeouts if errs is not None else (load.timeouts if load is not None
                                                       else None)
    return {"errors": _num(errors), "timeouts": _num(timeouts),
            "attempted": _num(errs.attempted if errs is not None else None),
            "error_rate": _num(errs.error_rate if errs is not None else None)}


def _model_columns(r: Result) -> dict:
    # the check's keys are models/check.py's
    check = r.model.check if isinstance(r.model.check, Mapping) else {}
    return {"parameters": _num(r.model.parameters), "check_ok": check.get("ok"),
            "max_rel_err": _num(check.get("max_rel_err")),
            "conversion_s": _num(r.model.conversion_s), "runtime_version": r.runtime.version}


GENERATIVE_METRICS = ("ttft", "itl", "tpot", "e2e")


def _generative(g: Generative | None) -> dict:
    """The generative-serving columns (NaN for other cells)."""
    g = g or Generative()
    out: dict[str, Any] = {}
    for metric in GENERATIVE_METRICS:
        lat = getattr(g, f"{metric}_ms")
        pcts = lat.percentiles if lat is not None else {}
        for key in ("p50", "p99"):
            p = pcts.get(key)
            out[f"{metric}_{key}_ms"] = _num(p.value if p else None)
            if key == "p99":
                out[f"{metric}_p99_lower_ms"] = _num(p.lower if p else None)
                out[f"{metric}_p99_upper_ms"] = _num(p.upper if p else None)
    goodput, tokens = g.goodput, g.tokens
    client = g.send_lag_ms.client if g.send_lag_ms is not None else None
    out.update({
        "requests_per_s": _num(g.requests_per_s),
        "output_tokens_per_s": _num(g.output_tokens_per_s),
        "total_tokens_per_s": _num(g.total_tokens_per_s),
        "goodput_per_s": _num(goodput.requests_per_s if goodput else None),
        "goodput_share": _num(goodput.share if goodput else None),
        "input_tokens_mean": _num(tokens.input.mean if tokens and tokens.input else None),
        "output_tokens_mean": _num(tokens.output.mean if tokens and tokens.output else None),
        "client_lag_p99_ms": _num(client.p99 if client else None),
    })
    return out


def _validity(r: Result) -> str | None:
    if r.load is not None and r.load.invalid_reasons:
        return "; ".join(str(x) for x in r.load.invalid_reasons)
    if r.load is not None and "invalid_reasons" in r.load.model_fields_set:
        return None                 # the generator said why, or that nothing was wrong
    if r.valid is False:
        late = r.load.late_fraction if r.load is not None else None
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

