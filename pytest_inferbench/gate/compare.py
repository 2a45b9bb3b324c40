"""A new run against a stored baseline: match cells, judge each gated metric, say what could
not be judged and why, and whether the comparison may gate at all.

    comparison = compare_runs(base_doc, new_doc, gate=None, force=False, base_label="nightly")
    print(render_text(comparison))
    comparison["failed"]        # True: a regression, and the comparison gates

Cells match by their resolved configuration (model, runtime and options, device, precision,
batch size, threads, workload, serving), not by file, line or name, so moving an entry keeps
its history. Repeats of a cell (--infer-repeat N, results carrying `repeat`) are the runs of
that cell on one side: they give the A/A noise (core/verdicts.py, stored_judgement).

A baseline measured on other hardware (CPU model, logical CPUs, GPUs) or with other versions
of the libraries that run the models (torch, onnxruntime, numpy, ...; Python's minor version)
is compared, but does not gate unless forced: its differences are not the code's.

Paired results in the new run (cells with `ab`) are listed with their own verdicts (re-judged
from their stored per-round ratios when a gate is given here); they gate regardless of the
baseline, since both sides ran on the same machine at the same time.
"""

from __future__ import annotations

import math

from ..core import fingerprint
from ..core.result import Result
from ..core.thresholds import GateConfig, default_noise, threshold_text
from ..core.verdicts import (
    IMPROVEMENT,
    NO_CHANGE,
    REGRESSION,
    SEVERITY,
    UNDETERMINED,
    cell_verdict,
    decide,
    judge,
    stored_judgement,
)
from ..results.cells import (
    config_key,
    in_search,
    display,
    group_by_config,
    histogram_percentile,
    is_measured,
    observe,
)
from ..results.runfile import typed_results

__all__ = [
    "HARDWARE",
    "LIBRARIES",
    "compare_runs",
    "config_key",
    "display",
    "finish_comparison",
    "group_by_config",
    "headline",
    "histogram_percentile",
    "is_measured",
    "mismatches",
    "observe",
    "paired_entry",
    "render_text",
]

# Provenance that must agree for a comparison to gate (core/fingerprint.py).
HARDWARE = fingerprint.HARDWARE
LIBRARIES = fingerprint.LIBRARIES


# ----------------------------------------------------------------------------- provenance

def mismatches(base_prov: dict, new_prov: dict) -> list[dict]:
    """What differs between two runs' machines and libraries (each {what, baseline, new})."""
    out = []
    for key in HARDWARE:
        a, b = base_prov.get(key), new_prov.get(key)
        if a is not None and b is not None and a != b:
            out.append({"what": key, "baseline": a, "new": b})
    ga, gb = fingerprint.gpus(base_prov), fingerprint.gpus(new_prov)
    if ga != gb:
        out.append({"what": "gpus", "baseline": ", ".join(ga) or "none",
                    "new": ", ".join(gb) or "none"})
    va, vb = base_prov.get("versions") or {}, new_prov.get("versions") or {}
    for lib in LIBRARIES:
        if va.get(lib) != vb.get(lib) and (lib in va or lib in vb):
            out.append({"what": lib, "baseline": va.get(lib, "absent"),
                        "new": vb.get(lib, "absent")})
    pa, pb = (fingerprint.python_minor(base_prov.get("python")),
              fingerprint.python_minor(new_prov.get("python")))
    if pa and pb and pa != pb:
        out.append({"what": "python", "baseline": pa, "new": pb})
    return out


# ----------------------------------------------------------------------------- comparing

def gate_for(rows: list[Result], override: GateConfig | None,
             confidence: float | None = None) -> GateConfig:
    if override is not None:
        config = override
    else:
        cell = rows[0].cell or {}       # the spec's Cell (JSON): its gate section
        config = GateConfig.from_json(cell.get("gate")) if cell.get("gate") else GateConfig()
    if confidence is not None:
        config = GateConfig(dict(config.thresholds), confidence, config.noise)
    return config


def compare_runs(base_doc: dict | None, new_doc: dict, gate: GateConfig | None = None,
                 force: bool = False, base_label: str | None = None,
                 new_label: str | None = None, confidence: float | None = None) -> dict:
    """The comparison (JSON-able): see the module doc and render_text. base_doc None: no
    stored baseline, only the new run's paired cells are listed."""
    has_base = base_doc is not None
    base_doc = base_doc or {}
    base_results = [r for r in typed_results(base_doc) if not in_search(r)]
    new_results = [r for r in typed_results(new_doc) if not in_search(r)]
    # paired cells judge themselves; the stored comparison covers the rest
    paired = [r for r in new_results if r.ab is not None and not r.ab.reference]
    base_groups = group_by_config(r for r in base_results if r.ab is None)
    new_groups = group_by_config(r for r in new_results if r.ab is None)
    entries, judged = [], []
    only_new = []
    not_measured = [{"cell": display(r), "reason": (
        f"a reference pair (ab.reference: {r.ab.baseline.changes if r.ab.baseline else '?'}): "
        f"its ratio is judged against its own earlier runs (--infer-baseline history)")}
        for r in new_results if r.ab is not None and r.ab.reference]
    for key, rows in new_groups.items():
        if key not in base_groups:
            if has_base:
                only_new.append(display(rows[0]))
            continue
        b_rows = [r for r in base_groups[key] if is_measured(r)]
        n_rows = [r for r in rows if is_measured(r)]
        if not b_rows or not n_rows:
            side = "the baseline" if not b_rows else "this run"
            status = (base_groups[key] if not b_rows else rows)[0].status
            not_measured.append({"cell": display(rows[0]),
                                 "reason": f"not measured in {side} ({status})"})
            continue
        entries.append(_stored_entry(b_rows, n_rows, gate, confidence, judged))
    only_base = [display(rows[0]) for key, rows in base_groups.items() if key not in new_groups]
    mismatch = mismatches(base_doc.get("provenance") or {},
                          new_doc.get("provenance") or {}) if has_base else []
    return finish_comparison(
        entries, judged, paired, gate, confidence,
        baseline=run_summary(base_doc, base_label) if has_base else None,
        new=run_summary(new_doc, new_label), mismatch=mismatch, gated=force or not mismatch,
        only_base=only_base, only_new=only_new, not_measured=not_measured)


def _stored_entry(b_rows: list[Result], n_rows: list[Result], gate, confidence,
                  judged: list) -> dict:
    """One cell measured in both runs: a judgement per gated metric (added to `judged`)."""
    config = gate_for(n_rows, gate, confidence)
    device = (n_rows[0].cell or {}).get("device")
    noise = config.noise if config.noise is not None else default_noise(device)
    js = []
    for metric, limit in config.thresholds.items():
        j = stored_judgement(metric, limit, [observe(r, metric) for r in b_rows],
                             [observe(r, metric) for r in n_rows], noise)
        if j.missing is None and not math.isfinite(j.se):
            j.missing = (f"{metric}: too few samples for its confidence bounds "
                         f"(n = {n_rows[0].latency_ms.n})")
        js.append(j)
        judged.append((config.confidence, j))
    busy = [side for side, rs in (("baseline", b_rows), ("this run", n_rows))
            if any(r.process.host_contended for r in rs)]
    return {"cell": display(n_rows[0]), "id": n_rows[0].id, "mode": "stored",
            "gate": config.to_json(), "judgements": js, "busy": busy,
            "repeats_base": len(b_rows), "repeats_new": len(n_rows)}


def finish_comparison(entries: list, judged: list, paired: list, gate: GateConfig | None,
                      confidence: float | None, *, baseline: dict | None, new: dict,
                      mismatch: list, gated: bool, only_base=(), only_new=(), not_measured=(),
                      notes=()) -> dict:
    """Decide the judged entries (Holm over all of them), add the paired cells, count: the
    comparison document, for a stored baseline and for history alike."""
    # Holm over every judgement of the comparison (per confidence level, normally one)
    for level in sorted({c for c, _ in judged}):
        decide([j for c, j in judged if c == level], level)
    for e in entries:
        for j in e["judgements"]:
            if j.verdict == UNDETERMINED and "is wider than the threshold" in j.reason:
                j.reason += (f"; needs paired mode (ab) to resolve "
                             f"{threshold_text(j.metric, j.limit)}")
            if e["busy"] and j.verdict in (REGRESSION, IMPROVEMENT):
                j.reason += (f"; other processes kept the host busy during "
                             f"{' and '.join(e['busy'])}: confirm with paired mode (ab)")
        e["verdict"] = cell_verdict(e["judgements"])
        e["metrics"] = [j.to_json() for j in e.pop("judgements")]
    for r in paired:
        regate = gate
        if confidence is not None:
            regate = gate_for([r], gate, confidence)
        entries.append(paired_entry(r, regate))
    entries.sort(key=lambda e: (SEVERITY[e["verdict"]], e["mode"] != "paired", e["cell"]))
    counts = {v: sum(1 for e in entries if e["verdict"] == v)
              for v in (REGRESSION, UNDETERMINED, IMPROVEMENT, NO_CHANGE)}
    # "stored": against a baseline (a stored run or the history), gated only when comparable
    stored_regressions = sum(1 for e in entries
                             if e["verdict"] == REGRESSION and e["mode"] != "paired")
    paired_regressions = counts[REGRESSION] - stored_regressions
    return {
        "baseline": baseline,
        "new": new,
        "gate": gate.to_json() if gate is not None else None,
        "gated": gated,
        "not_gated_reason": None if gated else (
            "the baseline ran on other hardware or library versions: verdicts are shown, "
            "not gated (--infer-gate-force, or compare --force, to gate anyway)"),
        "mismatch": mismatch,
        "verdicts": entries,
        "only_in_baseline": sorted(only_base),
        "only_in_new": sorted(only_new),
        "not_measured": list(not_measured),
        "notes": list(notes),
        "counts": counts,
        "regressions": {"stored": stored_regressions, "paired": paired_regressions},
        "failed": bool((gated and stored_regressions) or paired_regressions),
    }


def paired_entry(result: Result, gate: GateConfig | None = None) -> dict:
    """A paired cell's verdict, as recorded, or re-judged under `gate` from its ratios."""
    ab = result.ab
    metrics = ab.metrics or []
    verdict = ab.verdict or UNDETERMINED
    if gate is not None:
        js = judge(ab.ratios or {}, gate, ab.looks or 1, ab.cells or 1, ab.unit or "round")
        metrics = [j.to_json() for j in js]
        verdict = cell_verdict(js)
    return {"cell": display(result), "id": result.id, "mode": "paired",
            "verdict": verdict, "metrics": metrics, "rounds": ab.rounds,
            "pairs": len(ab.pairs) if ab.pairs else None,
            "against": ab.baseline.changes if ab.baseline is not None else None}


def run_summary(doc: dict, label: str | None) -> dict:
    prov = doc.get("provenance") or {}
    return {"label": label or doc.get("name"), "name": doc.get("name"),
            "path": str(doc.get("path")) if doc.get("path") else None,
            "host": prov.get("host"), "start_time": prov.get("start_time"),
            "commit": (prov.get("git") or {}).get("commit"),
            "repeats": doc.get("repeats")}


# ----------------------------------------------------------------------------- text

_TAG = {REGRESSION: "REGRESSION", UNDETERMINED: "undetermined", IMPROVEMENT: "improvement",
        NO_CHANGE: "no change"}


def headline(c: dict) -> str:
    n = c["counts"]
    base = c["baseline"]
    if base is None:
        against = "their paired baselines"
    else:
        against = f"baseline {base.get('label')}" + (f" ({base['start_time']})"
                                                     if base.get("start_time") else "")
    if c["failed"]:
        total = c["regressions"]["paired"] + (c["regressions"]["stored"] if c["gated"] else 0)
        state = f"FAILED: {total} regression{'s' if total != 1 else ''}"
    elif n[REGRESSION]:
        state = "not gated: regressions shown below"
    else:
        state = "passed"
    parts = [f"{n[k]} {_TAG[k]}" for k in (REGRESSION, UNDETERMINED, IMPROVEMENT, NO_CHANGE)
             if n[k]]
    return f"{state} ({', '.join(parts) or 'nothing compared'}) against {against}"


def render_text(c: dict, width: int = 100) -> str:
    """The verdict table: regressions first, then undetermined, improvements, unchanged cells
    (counted), cells on one side only, and why the comparison does not gate."""
    lines = [headline(c)]
    for e in c["verdicts"]:
        if e["verdict"] == NO_CHANGE and not e.get("reference"):
            continue        # a reference pair's "no change" may hide a moved machine: shown
        mode = e["mode"] + (", ratio to a reference" if e.get("reference") else "")
        lines.append(f"{_TAG[e['verdict']].upper() if e['verdict'] == REGRESSION else _TAG[e['verdict']]}"
                     f" [{mode}] {e['cell']}")
        for m in e["metrics"]:
            if m["verdict"] == NO_CHANGE and e["verdict"] != NO_CHANGE:
                lines.append(f"    {m['metric']}: no change ({_short(m)})")
            else:
                lines.append(f"    {m['metric']}: {m['verdict']}: {m['reason']}")
        if e["mode"] == "paired":
            pairs = f"{e['pairs']} pairs of fresh processes, " if e.get("pairs") else ""
            lines.append(f"    ({pairs}{e.get('rounds')} interleaved rounds against "
                         f"{e.get('against')})")
    unchanged = [e["cell"] for e in c["verdicts"]
                 if e["verdict"] == NO_CHANGE and not e.get("reference")]
    if unchanged:
        lines.append(f"no change: {len(unchanged)} cell{'s' if len(unchanged) != 1 else ''}")
    if c["not_measured"]:
        for item in c["not_measured"]:
            lines.append(f"not compared: {item['cell']}: {item['reason']}")
    if c["only_in_baseline"]:
        lines.append(f"only in the baseline ({len(c['only_in_baseline'])}): "
                     + ", ".join(c["only_in_baseline"]))
    if c["only_in_new"]:
        lines.append(f"only in this run ({len(c['only_in_new'])}): " + ", ".join(c["only_in_new"]))
    for note in c.get("notes") or ():
        lines.append(f"note: {note}")
    if c["mismatch"]:
        what = "; ".join(f"{m['what']}: {m['baseline']} -> {m['new']}" for m in c["mismatch"])
        lines.append(f"warning: this run differs from the baseline ({what})")
        if c["not_gated_reason"]:
            lines.append(f"warning: {c['not_gated_reason']}")
    return "\n".join(lines)


def _short(m: dict) -> str:
    r = m.get("ratio")
    return f"{100 * (r - 1):+.1f}%" if r else "?"
