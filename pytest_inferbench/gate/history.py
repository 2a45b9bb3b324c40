"""A run's cells judged against their history in the results store: the one judgement that
the session's gate (`--infer-baseline history`) and the `history` command both give, each
only formatting it. The baseline of a cell is its earlier runs on the run's machine
fingerprint since its last change point; the result is the comparison document of a stored
comparison (compare.py), Holm-corrected over the run's cells, paired cells listed with their
own verdicts.

    comparison = compare_with_history(store, new_doc, gate, options)      # the session's gate
    by_run = newest_against_history(store.series(with_result=True), gate)  # the command

Only runs with the judged run's fingerprint (core/fingerprint.py) are used: a cell measured
before only on other machines or library versions starts a new series here, said in one line.
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..core.fingerprint import describe, fingerprint, machine
from ..core.result import Result
from ..core.thresholds import GateConfig
from ..core.verdicts import Judgement, Obs
from ..history.changes import change_points
from ..history.judge import history_judgement, reference
from ..results.cells import (cell_key, display, group_by_config, in_search, is_measured,
                             observe)
from ..results.runfile import parse_result, typed_results
from ..store.db import ResultStore
from ..store.url import run_uid, shown
from .compare import finish_comparison, gate_for, run_summary
from .history_options import HistoryOptions


def per_run(rows: list[dict], metric: str, against: str | None = None
            ) -> tuple[list[dict], list[Obs], int]:
    """Store rows of one cell (oldest first) -> one observation per run: the geometric mean
    of its measured runs (processes or repeats), its sampling error that of the mean. A
    result whose host was busy (other processes took CPU: HOST BUSY) does not teach the
    history its noise: it is left out, and a run with nothing else is set aside (counted).
    Only the cell measured alone, or with `against` (a reference's label) the cell's side of
    its pairs with that reference: a side measured in sub-slices is a series of its own."""
    runs: dict[int, list] = {}
    info: dict[int, dict] = {}
    busy: set[int] = set()
    for row in rows:
        result = parse_result(row["result"])    # as stored, of any version
        if not is_measured(result) or reference_of(result) != (against or ""):
            continue
        if result.process.host_contended:
            busy.add(row["run_id"])
            continue
        runs.setdefault(row["run_id"], []).append(observe(result, metric))
        info.setdefault(row["run_id"], row)
    out_info, out_obs = [], []
    for run_id, obs in runs.items():
        good = [o for o in obs if o.value is not None and o.value > 0 and math.isfinite(o.value)]
        if not good:
            continue
        out_info.append(info[run_id])
        out_obs.append(run_mean(good))
    return out_info, out_obs, len(busy - set(runs))


def run_mean(obs: list[Obs]) -> Obs:
    """One run's observation from its measured runs (processes, repeats): their geometric
    mean, its sampling error that of the mean log."""
    logs = [math.log(o.value) for o in obs]
    se = math.sqrt(sum(o.se_log ** 2 for o in obs)) / len(obs)
    return Obs(math.exp(sum(logs) / len(logs)), se)


# ----------------------------------------------------------------------------- one cell

def metric_judgement(metric: str, limit: float, history: list[dict], measured: list[Result],
                     options: HistoryOptions, against: str | None = None) -> Judgement:
    """One metric of one cell: this run's measured repeats against the cell's earlier runs
    (store rows on this fingerprint, oldest first) since their last change point."""
    info, obs, busy = per_run(history, metric, against)
    changes = change_points([o.value for o in obs])
    ref = reference(len(obs), changes, options.window, options.min_runs)
    where = ref.note if ref.indices else ""
    if ref.indices and not where:
        where = f" (since {(info[ref.indices[0]].get('started_at') or '')[:10]})"
    if busy:
        where += f"; {busy} earlier run{'s' if busy != 1 else ''} on a busy host set aside"
    j = history_judgement(metric, limit, [obs[i] for i in ref.indices],
                          [observe(r, metric) for r in measured], options.min_runs, where)
    j.detail["changes"] = [{"run": info[c.index]["run_id"], "commit": info[c.index].get("commit"),
                            "ratio": round(c.ratio, 4)} for c in changes]
    return j


def _cell_entry(rows: list[Result], history: list[dict], config: GateConfig,
                options: HistoryOptions) -> tuple[dict | None, str | None]:
    """A cell's verdict entry (judgements not yet decided), or why it is not judged."""
    measured = [r for r in rows if is_measured(r)]
    if not measured:
        return None, f"not measured in this run ({rows[0].status})"
    quiet = [r for r in measured if not r.process.host_contended]
    if not quiet:
        return None, (f"set aside: other processes kept the host busy during every run of "
                      f"this cell (HOST BUSY), so its numbers are not its own; rerun on a "
                      f"quiet host, or compare in paired mode (ab)")
    js = [metric_judgement(metric, limit, history, quiet, options)
          for metric, limit in config.thresholds.items()]
    if len(quiet) < len(measured):
        for j in js:
            j.noise += (f"; {len(measured) - len(quiet)} of this run's {len(measured)} runs "
                        f"of the cell set aside (busy host)")
    short = [j for j in js if j.missing and "history mode needs" in j.missing]
    if short and len(short) == len(js):
        return None, short[0].missing
    return {"cell": display(rows[0]), "id": rows[0].id, "mode": "history",
            "gate": config.to_json(), "judgements": js, "busy": [],
            "repeats_base": None, "repeats_new": len(quiet)}, None


# ----------------------------------------------------------------------------- a reference pair

def ratio_obs(result: Result, metric: str) -> Obs | None:
    """A reference pair's run: the geometric mean of its rounds' ratios (cell / reference)
    of `metric`, its sampling error that of the mean log ratio."""
    ratios = [r for r in ((result.ab.ratios or {}).get(metric) or []) if r and r > 0]
    if len(ratios) < 2:
        return None
    logs = np.log(ratios)
    return Obs(float(np.exp(logs.mean())), float(logs.std(ddof=1) / math.sqrt(len(logs))))


def reference_of(result: Result) -> str | None:
    """A result's reference: "" measured alone, the reference's label for a reference pair,
    None for any other paired cell."""
    ab = result.ab
    if ab is None:
        return ""
    return (ab.baseline.changes or "") if ab.reference and ab.baseline is not None else None


def ratio_history(rows: list[dict], label: str, metric: str) -> list[Obs]:
    """Store rows of a cell (oldest first) -> one ratio observation per earlier run that
    measured it against the same reference in a quiet host (HOST BUSY runs teach nothing)."""
    runs: dict[int, list[Obs]] = {}
    for row in rows:
        result = parse_result(row["result"])
        if (not is_measured(result) or reference_of(result) != label
                or result.process.host_contended):
            continue
        obs = ratio_obs(result, metric)
        if obs is not None:
            runs.setdefault(row["run_id"], []).append(obs)
    return [run_mean(obs) for obs in runs.values()]


def reference_judgement(metric: str, limit: float, history: list[dict], result: Result,
                        options: HistoryOptions) -> Judgement:
    """One metric of a reference pair: this run's ratio to the reference against the ratios
    of the earlier runs, and, in its noise line, what the cell alone did against its own
    history (a change the reference shared is the machine's or the runtime's)."""
    label = result.ab.baseline.changes
    obs = ratio_history(history, label, metric)
    ref = reference(len(obs), change_points([o.value for o in obs]), options.window,
                    options.min_runs)
    new = ratio_obs(result, metric)
    where = f" (its ratio to the reference, {label}, measured alongside){ref.note}"
    j = history_judgement(metric, limit, [obs[i] for i in ref.indices],
                          [new] if new is not None else [], options.min_runs, where)
    alone = metric_judgement(metric, limit, history, [result], options, label)
    if not j.missing and not alone.missing and alone.detail.get("base_mean"):
        raw = alone.detail["new"][0] / alone.detail["base_mean"]
        j.noise += f"; the cell alone: {metric} x{raw:.3f} against its own history"
        if abs(alone.worse) > j.L and abs(j.worse) <= j.L:
            j.noise += (", and the reference moved with it: the machine or the runtime "
                        "changed, which the ratio does not judge")
        j.detail["alone"] = round(raw, 6)
    j.detail["reference"] = label
    return j


def _reference_entry(result: Result, history: list[dict], config: GateConfig,
                     options: HistoryOptions) -> tuple[dict | None, str | None]:
    """A reference pair's verdict entry, judged on its ratio, or why it is not judged."""
    if not is_measured(result):
        return None, f"not measured in this run ({result.status})"
    if result.process.host_contended:
        return None, ("set aside: other processes kept the host busy during the pair "
                      "(HOST BUSY); rerun on a quiet host")
    js = [reference_judgement(metric, limit, history, result, options)
          for metric, limit in config.thresholds.items()]
    short = [j for j in js if j.missing and "history mode needs" in j.missing]
    if short and len(short) == len(js):
        return None, short[0].missing
    return {"cell": display(result), "id": result.id, "mode": "history",
            "reference": result.ab.baseline.changes, "gate": config.to_json(),
            "judgements": js, "busy": [], "repeats_base": None, "repeats_new": 1}, None


# ----------------------------------------------------------------------------- one run

def judge_run(new_results: list[Result], here: str, this_machine: str, history: list[dict],
              gate: GateConfig | None, options: HistoryOptions, confidence: float | None,
              *, baseline: dict, new: dict) -> dict:
    """The comparison document of one run: its (typed) results against `history`, store rows
    of earlier runs with their results (any fingerprint: only `here` is used, the others
    are counted in a note). `this_machine` describes the fingerprint `here` for that note."""
    new_results = [r for r in new_results if not in_search(r)]
    paired = [r for r in new_results if reference_of(r) is None]
    groups = list(group_by_config(r for r in new_results if r.ab is None).values())
    groups += [[r] for r in new_results if reference_of(r)]   # each pair on its own
    entries, judged, not_measured, elsewhere = [], [], [], {}
    for rows in groups:
        mine = [h for h in history if h["cell_key"] == cell_key(rows[0])]
        same = [h for h in mine if h["fingerprint"] == here][-4 * options.window:]
        if len(same) < len(mine):
            elsewhere[display(rows[0])] = len({h["run_id"] for h in mine
                                               if h["fingerprint"] != here})
        config = gate_for(rows, gate, confidence)
        entry, why = (_reference_entry(rows[0], same, config, options)
                      if rows[0].ab is not None else _cell_entry(rows, same, config, options))
        if entry is None:
            not_measured.append({"cell": display(rows[0]), "reason": why})
            continue
        entries.append(entry)
        judged += [(config.confidence, j) for j in entry["judgements"]]
    return finish_comparison(entries, judged, paired, gate, confidence, baseline=baseline,
                             new=new, mismatch=[], gated=True, not_measured=not_measured,
                             notes=_elsewhere_note(elsewhere, this_machine))


def _elsewhere_note(elsewhere: dict, this_machine: str) -> list[str]:
    if not elsewhere:
        return []
    cells = ", ".join(sorted(elsewhere))
    return [f"{len(elsewhere)} cell{'s' if len(elsewhere) != 1 else ''} also ran on other "
            f"machines or library versions ({cells}): those runs are not this machine's "
            f"history; {this_machine} is a series of its own"]


# ----------------------------------------------------------------------------- the callers

def compare_with_history(store: ResultStore, new_doc: dict, gate=None,
                         options: HistoryOptions | None = None,
                         confidence: float | None = None) -> dict:
    """The session's gate: the finished session (not yet in the store) against the store."""
    options = options or HistoryOptions()
    new_results = typed_results(new_doc)
    prov = new_doc.get("provenance") or {}
    here = fingerprint(prov)
    keys = {cell_key(r) for r in new_results                   # plain cells, reference pairs
            if not in_search(r) and reference_of(r) is not None}
    this_run = run_uid(new_doc)
    history = [row for row in store.series(cell_keys=keys, branch=options.branch,
                                           with_result=True) if row["uid"] != this_run]
    baseline = {"label": f"history ({shown(store.url)})", "name": "history", "path": None,
                "host": prov.get("host"), "start_time": None, "commit": None,
                "repeats": None, "fingerprint": here, "window": options.window}
    return judge_run(new_results, here, describe(machine(prov)), history, gate, options,
                     confidence, baseline=baseline, new=run_summary(new_doc, None))


def newest_against_history(rows: list[dict], gate: GateConfig | None = None,
                           options: HistoryOptions | None = None) -> dict[int, dict]:
    """The `history` command: store rows with their results (ResultStore.series(with_result=
    True), oldest first) -> for each run that is the newest of some cell's series (per
    fingerprint), by run id, the comparison the session's gate gives that run against the
    runs before it."""
    options = options or HistoryOptions()
    newest: dict[tuple, int] = {}
    for row in rows:
        if is_measured(parse_result(row["result"])):
            newest[(row["cell_key"], row["fingerprint"])] = row["run_id"]
    out = {}
    for run_id in sorted(set(newest.values())):
        first = next(k for k, row in enumerate(rows) if row["run_id"] == run_id)
        mine = [row for row in rows if row["run_id"] == run_id]
        history = [row for row in rows[:first] if options.branch is None
                   or row.get("branch") == options.branch]
        run = rows[first]
        baseline = {"label": "history", "name": "history", "fingerprint": run["fingerprint"],
                    "window": options.window}
        new = {"label": run.get("run_name"), "name": run.get("run_name"),
               "start_time": run.get("started_at"), "commit": run.get("commit")}
        out[run_id] = judge_run([parse_result(row["result"]) for row in mine], run["fingerprint"],
                                describe(json.loads(run.get("machine") or "{}")), history,
                                gate, options, None, baseline=baseline, new=new)
    return out
