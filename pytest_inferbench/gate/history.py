"""A new run judged against each cell's history in the results store (`--infer-baseline
history`): the same verdict document as a stored comparison (compare.py), with the baseline
of each cell being its earlier runs on this machine fingerprint since its last change point.

    comparison = compare_with_history(store, new_doc, window=30, min_runs=5)

Only runs with this run's fingerprint (core/fingerprint.py) are used: a cell measured before
only on other machines or library versions starts a new series here, said in one line.
"""

from __future__ import annotations

import math

from ..core.fingerprint import describe, fingerprint, machine
from ..core.verdicts import Obs
from ..history.changes import change_points
from ..history.judge import history_judgement, reference
from ..results.cells import (cell_key, display, group_by_config, in_search, is_measured,
                             observe)
from ..results.runfile import parse_result, typed_results
from ..store.db import ResultStore
from ..store.url import run_uid, shown
from .compare import finish_comparison, gate_for, run_summary
from .history_options import HistoryOptions


def per_run(rows: list[dict], metric: str) -> tuple[list[dict], list[Obs]]:
    """Store rows of one cell (oldest first) -> one observation per run: the geometric mean
    of its measured repeats, its sampling error that of the mean."""
    runs: dict[int, list] = {}
    info: dict[int, dict] = {}
    for row in rows:
        result = parse_result(row["result"])    # as stored, of any version
        if not is_measured(result):
            continue
        runs.setdefault(row["run_id"], []).append(observe(result, metric))
        info.setdefault(row["run_id"], row)
    out_info, out_obs = [], []
    for run_id, obs in runs.items():
        good = [o for o in obs if o.value is not None and o.value > 0 and math.isfinite(o.value)]
        if not good:
            continue
        logs = [math.log(o.value) for o in good]
        se = math.sqrt(sum(o.se_log ** 2 for o in good)) / len(good)
        out_info.append(info[run_id])
        out_obs.append(Obs(math.exp(sum(logs) / len(logs)), se))
    return out_info, out_obs


def _judge_metric(metric: str, limit, same: list[dict], measured: list, options):
    """One metric of one cell against its history since the last change point."""
    info, obs = per_run(same, metric)
    changes = change_points([o.value for o in obs])
    ref = reference(len(obs), changes, options.window, options.min_runs)
    past = [obs[i] for i in ref.indices]
    since = info[ref.indices[0]] if ref.indices else None
    where = ref.note if ref.indices else ""
    if since is not None and not where:
        where = f" (since {(since.get('started_at') or '')[:10]})"
    j = history_judgement(metric, limit, past, [observe(r, metric) for r in measured],
                          options.min_runs, where)
    j.detail["changes"] = [{"run": info[c.index]["run_id"],
                            "commit": info[c.index].get("commit"),
                            "ratio": round(c.ratio, 4)} for c in changes]
    return j


def compare_with_history(store: ResultStore, new_doc: dict, gate=None,
                         options: HistoryOptions | None = None,
                         confidence: float | None = None) -> dict:
    options = options or HistoryOptions()
    new_results = [r for r in typed_results(new_doc) if not in_search(r)]
    prov = new_doc.get("provenance") or {}
    here = fingerprint(prov)
    this_run = run_uid(new_doc)
    paired = [r for r in new_results if r.ab is not None]
    groups = group_by_config(r for r in new_results if r.ab is None)
    keys = {key: cell_key(rows[0]) for key, rows in groups.items()}
    history = [row for row in store.series(cell_keys=set(keys.values()), branch=options.branch,
                                           with_result=True) if row["uid"] != this_run]
    entries, judged, not_measured, elsewhere = [], [], [], {}
    for key, rows in groups.items():
        mine = [h for h in history if h["cell_key"] == keys[key]]
        same = [h for h in mine if h["fingerprint"] == here][-4 * options.window:]
        if len(same) < len(mine):
            elsewhere[display(rows[0])] = len({h["run_id"] for h in mine
                                               if h["fingerprint"] != here})
        measured = [r for r in rows if is_measured(r)]
        if not measured:
            not_measured.append({"cell": display(rows[0]),
                                 "reason": f"not measured in this run ({rows[0].status})"})
            continue
        config = gate_for(rows, gate, confidence)
        js = [_judge_metric(metric, limit, same, measured, options)
              for metric, limit in config.thresholds.items()]
        judged.extend((config.confidence, j) for j in js)
        missing = [j for j in js if j.missing and "history mode needs" in j.missing]
        if missing and len(missing) == len(js):
            not_measured.append({"cell": display(rows[0]), "reason": missing[0].missing})
            judged = [(c, j) for c, j in judged if j not in js]
            continue
        busy = ["this run"] if any(r.process.host_contended for r in measured) else []
        entries.append({"cell": display(rows[0]), "id": rows[0].id, "mode": "history",
                        "gate": config.to_json(), "judgements": js, "busy": busy,
                        "repeats_base": None, "repeats_new": len(measured)})
    notes = []
    if elsewhere:
        cells = ", ".join(sorted(elsewhere))
        notes.append(f"{len(elsewhere)} cell{'s' if len(elsewhere) != 1 else ''} also ran on "
                     f"other machines or library versions ({cells}): those runs are not this "
                     f"machine's history; {describe(machine(prov))} is a series of its own")
    baseline = {"label": f"history ({shown(store.url)})", "name": "history", "path": None,
                "host": prov.get("host"), "start_time": None, "commit": None,
                "repeats": None, "fingerprint": here, "window": options.window}
    return finish_comparison(entries, judged, paired, gate, confidence, baseline=baseline,
                             new=run_summary(new_doc, None), mismatch=[], gated=True,
                             not_measured=not_measured, notes=notes)
