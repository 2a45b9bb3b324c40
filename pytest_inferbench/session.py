"""The session's state on the controller (and on each worker): the artifact cache, the
launched servers' pool, results as they arrive, the run file (written as results come, so
nothing measured is lost), the session gate, the terminal summary and the live progress line
of the running cell."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from .core.fingerprint import fingerprint
from .core.result import Result
from .gate.session import SessionGate
from .measure import provenance
from .measure.provenance import now_iso
from .models.cache import ArtifactCache
from .results.cells import cell_key
from .results.runfile import FORMAT, VERSION, RunWriter
from .results.noise import cell_noise, noise_lines
from .results.summary import summary_table
from .schedule.facts import run_file_section
from .schedule.worker import link_colocated, summary_line
from .serving.pool import ServerPool
from .spec import Job
from .store.url import shown

JOB_KEY = pytest.StashKey[Job | None]()
STATE_KEY = pytest.StashKey["SessionState"]()
FOLLOWERS_KEY = pytest.StashKey[tuple | None]()
SCHED_KEY = pytest.StashKey[object]()


def _reason(report) -> str | None:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        text = report.longreprtext.strip()
        return text[-4000:] if text else "failed"
    return None


class SessionState:
    """Controller-side (and worker-side) state: cache location, results, run file, summary."""

    def __init__(self, config, gate=None):
        self.config = config
        self.gate = gate if gate is not None else SessionGate()
        self.paired_cells = 1
        root = config.rootpath
        cache = os.environ.get("INFERBENCH_CACHE_DIR") or config.getini("inferbench_cache_dir")
        self.cache = ArtifactCache(Path(root, cache))
        self.is_worker = hasattr(config, "workerinput")
        self.servers = ServerPool()         # launched servers, reused by consecutive cells
        self.results = []
        self.noise = []         # cells measured more than once (results/noise.py)
        self.writer = None
        self.run_files: list[Path] = []
        self.html_report: Path | None = None
        self.html_error: str | None = None

    # -- progress (controller without xdist, terminal only, not under -q)
    def progress_for(self, item):
        if self.is_worker or self.config.getoption("--infer-no-progress"):
            return None
        if self.config.get_verbosity() < 0:
            return None
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if tr is None or not tr.isatty():
            return None
        return LiveLine(tr, capman)

    # -- controller: collect results as reports arrive
    def pytest_runtest_logreport(self, report):
        payload = getattr(report, "inferbench", None)
        if not payload or self.is_worker:
            return
        if report.when == "teardown":
            return
        for entry in payload:
            result = Result.model_validate(entry)
            # a result may fail on its own (errors, n = 0); a search's trial keeps its own
            if result.status != "failed" and not result.search_trial:
                result.status = report.outcome
            if result.status != "passed":
                result.reason = result.reason or _reason(report)
            self.results.append(result)
            entry = result.to_json()
            link_colocated(entry, self._writer().results)
            self._writer().add(entry)

    def _writer(self):
        if self.writer is None:
            runs = self.config.getoption("--infer-runs-dir") or self.config.getini("inferbench_runs_dir")
            extra = self.config.getoption("--infer-json")
            job = self.config.stash.get(JOB_KEY, None)
            self.writer = RunWriter(Path(self.config.rootpath, runs), job.name if job else "session",
                                    provenance.collect(str(self.config.rootpath)),
                                    Path(self.config.invocation_params.dir, extra) if extra else None)
        return self.writer

    def pytest_sessionfinish(self, session):
        self.servers.close()
        if not self.is_worker and self.writer is not None:
            self.noise = cell_noise(self.results, self.gate.gate)
            self.run_files = self.writer.finish(now_iso(), {**self._gate_run(),
                                                            **run_file_section(self.config)})
            if self.run_files:
                self.gate.record(json.loads(self.run_files[0].read_text()), self.run_files[0],
                                 now_iso())
                self.gate.save_baseline(self._run_doc(), self.run_files[0], now_iso())
            self._render_html()
            if self.gate.failed and session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _run_doc(self) -> dict:
        w = self.writer
        return {"format": FORMAT, "version": VERSION, "name": w.name,
                "provenance": w.provenance, "results": w.results,
                **({"repeats": self.gate.repeats} if self.gate.repeats > 1 else {})}

    def _gate_run(self) -> dict:
        """Top-level run-file keys: repeats, and the comparison with the baseline. A failure
        here is a warning in the summary, never a lost run file."""
        extra = {"repeats": self.gate.repeats} if self.gate.repeats > 1 else {}
        if self.noise:
            extra["noise"] = self.noise
        try:
            comparison = self.gate.compare(self._run_doc(), exclude=[self.writer.path])
        except Exception as exc:  # noqa: BLE001 - the results matter more than the verdicts
            first = (str(exc).strip().splitlines() or [""])[0]
            self.gate.notes.append((f"the comparison failed ({type(exc).__name__}: {first})",
                                    True))
            comparison = None
        if comparison is not None:
            extra["comparison"] = comparison
        return extra

    def _html_path(self) -> Path | None:
        """--infer-no-html > --infer-html > the job's report.html > reports/<name>.html."""
        if self.config.getoption("--infer-no-html"):
            return None
        option = self.config.getoption("--infer-html")
        if option:
            return Path(self.config.invocation_params.dir, option)
        job = self.config.stash.get(JOB_KEY, None)
        name = job.name if job else "session"
        configured = job.report.html if job and job.report else None
        if configured is False:
            return None
        template = configured or "reports/{name}.html"
        return Path(self.config.rootpath, template.replace("{name}", name))

    def _render_html(self) -> None:
        """The HTML report, from the run file already on disk: a failure here is a warning in
        the summary, never a lost result."""
        target = self._html_path()
        if target is None or not self.run_files:
            return
        job = self.config.stash.get(JOB_KEY, None)
        report = job.report if job else None
        try:
            from .report.render import render_report  # lazy: pandas
            self.html_report = render_report(
                [self.run_files[0]], target, title=report.title if report else None,
                cost=job.cost if job else None, slo=report.slo if report else None,
                peak_flops=report.peak_flops if report else None,
                peak_bandwidth=report.peak_bandwidth if report else None,
                trends=self._trends())
        except Exception as exc:  # noqa: BLE001 - the run file is safe; say what went wrong
            first = (str(exc).strip().splitlines() or [""])[0]
            self.html_error = f"{type(exc).__name__}: {first}"

    def _trends(self) -> list[dict] | None:
        """This run's cells' series in the results store (this fingerprint), for the Trends
        section; None when there is no store or it cannot be read (said once)."""
        if self.gate.store_url is None or self.gate.recorded is None:
            return None
        from .history.trends import series  # lazy: scipy, only with a store
        from .store.db import ResultStore  # lazy: sqlalchemy
        keys = {cell_key(r) for r in self.results}     # the same cells, typed
        try:
            store = ResultStore.open(self.gate.store_url)
            try:
                rows = store.series(cell_keys=keys,
                                    fingerprint=fingerprint(self.writer.provenance))
            finally:
                store.close()
        except Exception as exc:  # noqa: BLE001 - the report matters more than its trends
            first = (str(exc).strip().splitlines() or [""])[0]
            self.gate.notes.append((f"results store: no Trends section in the report "
                                    f"({type(exc).__name__}: {first})", True))
            return None
        return [s.to_json() for s in series(rows)]

    def pytest_terminal_summary(self, terminalreporter):
        if self.is_worker or not self.results:
            return
        tr = terminalreporter
        tr.section("inferbench")
        tr.write_line(summary_table(self.results, width=tr._tw.fullwidth))
        if self.noise:
            tr.write_line("noise over each cell's runs (sd of the log values; a gate compares "
                          "runs against runs):")
            for line in noise_lines(self.noise):
                tr.write_line(f"  {line}")
        for path in self.run_files:
            tr.write_line(f"run file: {path}")
        if self.gate.recorded is not None:

            tr.write_line(f"results store: {shown(self.gate.store_url)} "
                          f"(run {self.gate.recorded[0]}, {self.gate.recorded[1]} results)")
        if self.html_report is not None:
            tr.write_line(f"html report: {self.html_report}")
        if self.html_error is not None:
            tr.write_line(f"warning: the HTML report was not written ({self.html_error}); the "
                          f"run file has every result: python -m pytest_inferbench report "
                          f"{self.run_files[0] if self.run_files else 'RUN'}", yellow=True)
        lines = self.gate.section()
        if lines:
            tr.section("inferbench gate")
            for text, markup in lines:
                tr.write_line(text, **markup)
        if self.gate.failed:
            _gate_into_stats(tr, self.gate.comparison)
        workers = getattr(self.config.option, "numprocesses", None)
        sched = self.config.stash.get(SCHED_KEY, None)
        if sched is not None:
            tr.write_line(f"note: {summary_line(sched, self.results)}")
        elif workers and getattr(self.config.option, "dist", "no") != "no":
            tr.write_line(f"note: {workers} xdist workers measured cells at the same time on this "
                          f"host; concurrent cells disturb each other's numbers", yellow=True)


def _gate_into_stats(tr, comparison: dict) -> None:
    """A gating regression as a failed report of its own: pytest's short test summary gets a
    FAILED line and its last line counts it (red), as for any failed test. Runs before the
    terminal reporter writes those (its summary hook wraps ours)."""
    regressions = [e["cell"] for e in comparison["verdicts"]      # paired ones fail items
                   if e["verdict"] == "regression" and e["mode"] != "paired"]
    against = (comparison.get("baseline") or {}).get("label") or "the baseline"
    message = (f"{len(regressions)} regression{'s' if len(regressions) != 1 else ''} against "
               f"{against}: {', '.join(regressions)} (section 'inferbench gate')")
    report = pytest.TestReport(nodeid="inferbench gate", location=("inferbench gate", None,
                                                                     "inferbench gate"),
                               keywords={}, outcome="failed", longrepr=message, when="call")
    tr.stats.setdefault("failed", []).append(report)


class LiveLine:
    """A status line for the running cell (elapsed, queries, current p99), erased afterwards."""

    def __init__(self, tr, capman):
        self.tr = tr
        self.capman = capman
        self.shown = 0
        self.started = time.perf_counter()
        self.prefix = ""        # a search's trial: "trial 3/12 "

    def __call__(self, elapsed_s: float, queries: int, p99_ms: float | None) -> None:
        text = f" [{self.prefix}{elapsed_s:5.1f}s {queries:,} q p99 {p99_ms:.3g} ms]" \
            if p99_ms is not None else f" [{self.prefix}{elapsed_s:5.1f}s {queries:,} q]"
        self._write("\b" * self.shown + text + " " * max(0, self.shown - len(text))
                    + "\b" * max(0, self.shown - len(text)))
        self.shown = len(text)

    def clear(self) -> None:
        if self.shown:
            self._write("\b" * self.shown + " " * self.shown + "\b" * self.shown)
            self.shown = 0

    def _write(self, text: str) -> None:
        if self.capman is not None:
            with self.capman.global_and_fixture_disabled():
                self.tr.write(text, flush=True)
        else:
            self.tr.write(text, flush=True)
