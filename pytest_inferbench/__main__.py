"""Command line: `python -m pytest_inferbench <command> ...`.

    python -m pytest_inferbench report RUN... [-o report.html] [--title T] [--config job.yaml]
                                       [--cost cpu=0.40] [--slo p99<=50ms] [--peak-flops cpu=1e11]
    python -m pytest_inferbench compare BASE NEW [--gate p99=+10%,throughput=-5%]
                                        [--confidence 0.95] [--force] [--json PATH]
    python -m pytest_inferbench store import DIR|FILE... [--store URL]
    python -m pytest_inferbench history [--cell PATTERN] [--since DATE] [--store URL] [--json P]
    python -m pytest_inferbench schema          # the run file's JSON Schema (version 2)

A command is one function that adds its subparser (`_add_<name>`) and one that runs it; add a new
one (e.g. `compare`) to COMMANDS. A user's mistake (a missing file, a file that is not a run
file, a bad option) exits with status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

from .core.errors import SpecError
from .core.thresholds import GateError, parse_gate
from .core.verdicts import REGRESSION
from .gate.baselines import BaselineError, resolve
from .gate.compare import compare_runs, render_text
from .results.runfile import RunFile, RunFileError, load_run
from .spec import load_job
from .store.url import resolve_url, shown


class UsageError(Exception):
    """A mistake in the command line or its inputs: one line, exit status 2."""


def _pairs(values: list[str] | None, what: str) -> dict[str, float]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            out[key] = float(value)
        except ValueError:
            raise UsageError(f"{what}: expected KEY=NUMBER (e.g. cpu=0.40), got {item!r}") from None
    return out


# ----------------------------------------------------------------------------- report

def _add_report(sub) -> None:
    p = sub.add_parser("report", help="render the HTML report from run files",
                       description="Render one self-contained HTML report from run files (or "
                                   "directories of them); several runs are told apart.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run file (.json or .partial.jsonl) or a directory of run files")
    p.add_argument("-o", "--output", metavar="PATH", default=None,
                   help="where to write the report (default: reports/<run name>.html)")
    p.add_argument("--title", default=None, help="the report's title")
    p.add_argument("--config", metavar="JOB", default=None,
                   help="a job file whose report and cost sections apply (title, slo, "
                        "peak_flops, peak_bandwidth, cost)")
    p.add_argument("--cost", action="append", metavar="KEY=PRICE",
                   help="price per device-hour for a device type, device or host "
                        "(repeatable), e.g. --cost cpu=0.40 --cost cuda=2.50")
    p.add_argument("--currency", default=None, help="currency shown with costs (default $)")
    p.add_argument("--slo", default=None, metavar="pP<=BOUND",
                   help="the SLO the best configuration is chosen under, e.g. p99<=50ms")
    p.add_argument("--peak-flops", action="append", metavar="KEY=FLOPS",
                   help="device peak FLOP/s for the roofline, e.g. cpu=1e11 (repeatable)")
    p.add_argument("--peak-bandwidth", action="append", metavar="KEY=BYTES_PER_S",
                   help="device memory bandwidth for the roofline, e.g. cpu=2e10")
    p.set_defaults(func=_run_report)


def _run_report(args) -> int:
    from .analysis.frame import ResultsError  # lazy: pandas
    from .report.render import ReportError, parse_slo, render_report  # lazy: pandas
    for run in args.runs:
        if not Path(run).exists():
            raise UsageError(f"{run}: no such file or directory")
    title, slo, cost, peak_flops, peak_bw = args.title, None, None, None, None
    if args.config:
        try:
            job = load_job(args.config)
        except SpecError as exc:
            raise UsageError(f"--config: {exc.render()}") from None
        if job.report:
            title = title or job.report.title
            slo, peak_flops, peak_bw = job.report.slo, job.report.peak_flops, \
                job.report.peak_bandwidth
        if job.cost:
            cost = job.cost.model_dump()
    if args.cost or args.currency:
        cost = dict(cost or {"per_hour": {}})
        cost["per_hour"] = {**(cost.get("per_hour") or {}), **_pairs(args.cost, "--cost")}
        if args.currency:
            cost["currency"] = args.currency
    if args.peak_flops:
        peak_flops = {**(peak_flops or {}), **_pairs(args.peak_flops, "--peak-flops")}
    if args.peak_bandwidth:
        peak_bw = {**(peak_bw or {}), **_pairs(args.peak_bandwidth, "--peak-bandwidth")}
    if args.slo:
        try:
            slo = parse_slo(args.slo)[:2]
        except (ReportError, ValueError) as exc:
            raise UsageError(f"--slo: {exc}") from None
    try:
        out = render_report(args.runs, args.output, title=title, cost=cost, slo=slo,
                            peak_flops=peak_flops, peak_bandwidth=peak_bw)
    except (ResultsError, ReportError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write the report: {exc.strerror or exc}"
                         f"{': ' + exc.filename if exc.filename else ''}") from None
    print(f"html report: {out}")
    return 0


# ----------------------------------------------------------------------------- compare

def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="compare a run with a baseline and gate on regressions",
                       description="The verdicts a session with --infer-baseline gives, from "
                                   "run files, without rerunning: exit 0 (no regression), 1 (a "
                                   "regression), 2 (bad input).")
    p.add_argument("base", metavar="BASE",
                   help="the baseline: a run file, a saved baseline's name, or 'latest' (the "
                        "newest run file in the runs directory other than NEW)")
    p.add_argument("new", metavar="NEW",
                   help="the run to judge: a run file, a baseline name, or 'latest'")
    p.add_argument("--gate", metavar="METRIC=CHANGE,...", default=None,
                   help="thresholds for every cell, e.g. p99=+10%%,throughput=-5%% (default: "
                        "each cell's gate from the spec, else p50=+5%%,throughput=-5%%)")
    p.add_argument("--confidence", type=float, default=None,
                   help="confidence of every verdict (default: the gate's, 0.95)")
    p.add_argument("--force", action="store_true",
                   help="gate even when the runs' hardware or library versions differ")
    p.add_argument("--runs-dir", default=".inferbench/runs", metavar="DIR",
                   help="where 'latest' looks (default .inferbench/runs)")
    p.add_argument("--baselines-dir", default=".inferbench/baselines", metavar="DIR",
                   help="where baseline names are looked up (default .inferbench/baselines)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the comparison here")
    p.set_defaults(func=_run_compare)


def _run_compare(args) -> int:
    import json

    gate = None
    try:
        if args.gate:
            gate = parse_gate(args.gate)
    except GateError as exc:
        raise UsageError(f"--gate: {exc}") from None
    if args.confidence is not None and not 0.5 <= args.confidence < 1:
        raise UsageError(f"--confidence: expected a number in [0.5, 1), got {args.confidence}")

    def find(ref: str, exclude=()) -> Path:
        try:
            path = resolve(ref, runs_dir=Path(args.runs_dir), baselines_dir=Path(args.baselines_dir),
                           base=Path.cwd(), exclude=exclude)
        except BaselineError as exc:
            raise UsageError(str(exc)) from None
        if path is None:
            raise UsageError(f"{ref}: no run file in {args.runs_dir}" if ref == "latest" else
                             f"{ref}: no baseline of that name in {args.baselines_dir} (and no "
                             f"such file)")
        return path

    new_path = find(args.new)
    base_path = find(args.base, exclude=[new_path])
    docs = []
    for path in (base_path, new_path):
        try:
            doc = load_run(path)
        except RunFileError as exc:
            raise UsageError(str(exc)) from None
        except (ValueError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"{path}: not a readable run file ({first})") from None
        doc["path"] = str(path)
        docs.append(doc)
    base_label = (docs[0].get("baseline") or {}).get("name") or str(base_path)
    comparison = compare_runs(docs[0], docs[1], gate, args.force, base_label=base_label,
                              new_label=str(new_path), confidence=args.confidence)
    print(render_text(comparison))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(comparison, indent=1))
        except OSError as exc:
            raise UsageError(f"--json: cannot write {args.json}: {exc.strerror or exc}") from None
    return 1 if comparison["failed"] else 0


# ----------------------------------------------------------------------------- main

# ----------------------------------------------------------------------------- store, history

def _store_arg(p) -> None:
    p.add_argument("--store", metavar="URL|PATH", default=None,
                   help="the results store (default: env INFERBENCH_STORE, else "
                        ".inferbench/results.db here); postgresql://user@host/db for a team")


def _open_store(value):
    from .store.db import ResultStore, StoreError  # lazy: sqlalchemy
    url = resolve_url(value or os.environ.get("INFERBENCH_STORE"), Path.cwd())
    if url is None:
        raise UsageError("the results store is off (--store none): name one with --store URL")
    try:
        return ResultStore.open(url)
    except StoreError as exc:
        raise UsageError(str(exc)) from None


def _add_store(sub) -> None:
    p = sub.add_parser("store", help="the results store: import run files",
                       description="Load run files (or directories of them) into the results "
                                   "store; a run already there is skipped, so importing twice "
                                   "adds nothing.")
    action = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = action.add_parser("import", help="load run files into the store")
    imp.add_argument("paths", nargs="+", metavar="DIR|FILE")
    _store_arg(imp)
    imp.set_defaults(func=_run_store_import)


def _run_store_import(args) -> int:
    from .store.db import StoreError  # lazy: sqlalchemy
    files = []
    for path in map(Path, args.paths):
        if path.is_dir():
            found = sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
            if not found:
                raise UsageError(f"{path}: no run files (*.json) in this directory")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    docs = []
    for f in files:
        try:
            docs.append((f, load_run(f)))
        except RunFileError as exc:
            raise UsageError(str(exc)) from None
    store = _open_store(args.store)
    added = skipped = results = 0
    try:
        for f, doc in docs:
            done = store.record(doc, f.resolve())
            added += done.added
            skipped += not done.added
            results += done.results if done.added else 0
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    finally:
        store.close()
    print(f"{added} run{'s' if added != 1 else ''} added ({results} results), {skipped} "
          f"already in {shown(store.url)}")
    return 0


def _add_history(sub) -> None:
    p = sub.add_parser("history", help="change points in each cell's history; exit 1 when "
                                       "the newest run is a regression",
                       description="Each cell's series in the results store, per machine "
                                   "fingerprint, with its change points (Apache Otava's "
                                   "E-Divisive): where, the commit range, the size and the "
                                   "p-value; and the verdict on its newest run, the one "
                                   "--infer-baseline history gives. Exit 1 when a cell's "
                                   "newest run is a regression against its history.")
    p.add_argument("--cell", metavar="PATTERN", default=None,
                   help="only cells whose spec::id matches (glob; a plain word matches "
                        "anywhere)")
    p.add_argument("--since", metavar="DATE", default=None,
                   help="only runs started on or after this date (YYYY-MM-DD)")
    p.add_argument("--gate", metavar="METRIC=CHANGE,...", default=None,
                   help="thresholds for the newest run's verdict (default: each cell's "
                        "gate from the spec, else p50=+5%%,throughput=-5%%)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the series here")
    _store_arg(p)
    p.set_defaults(func=_run_history)


def _run_history(args) -> int:
    from .gate.history import newest_against_history  # lazy: sqlalchemy, scipy
    from .history.trends import series  # lazy: scipy
    if args.since is not None:
        try:
            date.fromisoformat(args.since[:10])
        except ValueError:
            raise UsageError(f"--since {args.since}: expected a date, YYYY-MM-DD") from None
    try:
        gate = parse_gate(args.gate) if args.gate else None
    except GateError as exc:
        raise UsageError(str(exc)) from None
    store = _open_store(args.store)
    try:
        rows = store.series(since=args.since, with_result=True)
    finally:
        store.close()
    found = series(rows, args.cell)
    if not found:
        what = f" matching {args.cell!r}" if args.cell else ""
        print(f"no measured cells{what} in {shown(store.url)}")
        return 0
    # the session gate's own judgement of each newest run (gate/history.py), formatted here
    by_run = newest_against_history(rows, gate)
    listing = [{**s.to_json(), "newest": _newest_verdict(s, by_run)} for s in found]
    for s, entry in zip(found, listing):
        _print_series(s, entry["newest"])
    if args.json:
        Path(args.json).write_text(json.dumps(listing, indent=1))
    failing = sum(1 for e in listing if e["newest"].get("mode") == "history"
                  and e["newest"]["verdict"] == REGRESSION)
    if failing:
        print(f"{failing} cell{'s' if failing != 1 else ''}: the newest run starts a regression")
        return 1
    return 0


def _newest_verdict(s, by_run: dict) -> dict:
    """A series' cell in the comparison of its newest run: its verdict, or why it has none."""
    run_id = s.runs[-1]["run_id"]
    comparison = by_run.get(run_id) or {}
    for e in comparison.get("verdicts", []):
        if e["cell"] == s.cell:
            return {"run_id": run_id, "mode": e["mode"], "verdict": e["verdict"],
                    "metrics": e["metrics"]}
    reason = next((item["reason"] for item in comparison.get("not_measured", [])
                   if item["cell"] == s.cell), "not judged: a configuration search")
    return {"run_id": run_id, "mode": None, "verdict": None, "reason": reason}


def _print_series(s, newest: dict) -> None:
    first, last = s.runs[0], s.runs[-1]
    print(f"{s.cell}  [{s.where}]: {len(s.runs)} runs, "
          f"{(first.get('started_at') or '?')[:10]} .. {(last.get('started_at') or '?')[:10]}")
    for st in s.steps:
        print(_step_line(st))
    if not s.steps:
        print("  no change points")
    if newest["verdict"] is None:
        print(f"  newest run: {newest['reason']}")
    elif newest["mode"] == "paired":
        print(f"  newest run: paired, judged by its own rounds: {newest['verdict']}")
    else:
        for m in newest["metrics"]:
            tag = "REGRESSION" if m["verdict"] == REGRESSION else m["verdict"]
            print(f"  newest run: {m['metric']} {tag}: {m['reason']}")


def _step_line(st) -> str:
    from .history.trends import METRICS  # lazy: scipy
    label, unit, _ = METRICS[st.metric]
    commits = "..".join((c or "?")[:10] for c in
                        (st.run_before.get("commit"), st.run_after.get("commit")))
    tag = "REGRESSION" if st.worse else "improvement"
    return (f"  {label}: {tag} at run {st.index + 1} "
            f"({(st.run_after.get('started_at') or '?')[:10]}, commits {commits}): "
            f"{st.change.before:.4g} -> {st.change.after:.4g} {unit} "
            f"({100 * (st.change.ratio - 1):+.1f}%), p = {st.change.pvalue:.2g}")


def _add_schema(sub) -> None:
    p = sub.add_parser("schema", help="print the run file's JSON Schema",
                       description="Print the JSON Schema of a run file as this version writes "
                                   "it (docs/results.md); older versions are read through one "
                                   "upgrade step.")
    p.set_defaults(func=_run_schema)


def _run_schema(args) -> int:
    print(json.dumps(RunFile.model_json_schema(), indent=1))
    return 0


COMMANDS = [_add_report, _add_compare, _add_store, _add_history, _add_schema]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_inferbench",
                                     description="pytest-inferbench tools for run files")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)     # argparse itself exits 2 on a bad command line
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:     # `... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
