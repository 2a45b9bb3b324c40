"""Command line: `python -m pytest_inferbench <command> ...`.

    python -m pytest_inferbench report RUN... [-o report.html] [--title T] [--config job.yaml]
                                       [--cost cpu=0.40] [--slo p99<=50ms] [--peak-flops cpu=1e11]

A command is one function that adds its subparser (`_add_<name>`) and one that runs it; add a new
one (e.g. `compare`) to COMMANDS. A user's mistake (a missing file, a file that is not a run
file, a bad option) exits with status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    from .analysis.frame import ResultsError
    from .report.render import ReportError, parse_slo, render_report
    for run in args.runs:
        if not Path(run).exists():
            raise UsageError(f"{run}: no such file or directory")
    title, slo, cost, peak_flops, peak_bw = args.title, None, None, None, None
    if args.config:
        from .errors import SpecError
        from .spec import load_job
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


# ----------------------------------------------------------------------------- main

COMMANDS = [_add_report]


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


if __name__ == "__main__":
    sys.exit(main())
