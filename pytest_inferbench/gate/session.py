"""The session's side of baselines and gating (no pytest here; plugin.py calls it):
which baseline to compare with, the comparison once every cell has run, saving the session
as a named baseline, and the terminal section.

Order at the end of a session: the run is compared (against the baseline as it was before
this session), the comparison goes into the run file ("comparison"), the run file is written,
then saved as a baseline if asked, then the HTML report is rendered from the run file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.thresholds import GateConfig, GateError, parse_gate
from ..results.cells import in_search
from ..results.runfile import RunFileError, load_run, typed_results
from ..store.url import shown
from .baselines import BaselineError, check_name, is_path, resolve, save
from .compare import compare_runs, render_text
from .history_options import HistoryOptions

HISTORY = "history"


class GateSetupError(ValueError):
    """A gate or baseline option that cannot be used (a usage error)."""


@dataclass
class SessionGate:
    baseline_ref: str | None = None
    save_name: str | None = None
    gate: GateConfig | None = None          # --infer-gate: overrides every cell's
    enabled: bool = True                    # --infer-no-gate: compare, never fail
    force: bool = False                     # --infer-gate-force: gate across mismatches
    repeats: int = 1
    runs_dir: Path = Path(".inferbench/runs")
    baselines_dir: Path = Path(".inferbench/baselines")
    base_dir: Path | None = None            # relative baseline paths start here
    comparison: dict | None = None
    notes: list = field(default_factory=list)   # (text, is_warning)
    saved: Path | None = None
    saved_processes: int = 0                # fresh processes per cell in the saved baseline
    recorded: tuple | None = None           # (run id in the store, results)
    baseline_path: Path | None = None
    store_url: str | None = None            # the results store (None: off)
    history: HistoryOptions = field(default_factory=HistoryOptions)

    @classmethod
    def from_options(cls, *, baseline=None, save_name=None, gate=None, no_gate=False,
                     force=False, repeats=1, job=None, runs_dir, baselines_dir, invocation_dir,
                     store_url=None, worker=False):
        """Command line over the job file's `baseline` section. Raises GateSetupError. An
        xdist worker compares nothing (the controller does), so it does not look for the
        baseline (a follower's copy of rootdir need not hold it)."""
        job_baseline = job.baseline if job is not None else None
        base_dir = Path(invocation_dir)
        if baseline is None and job_baseline is not None and job_baseline.compare:
            baseline = job_baseline.compare        # a path there is already absolute
        if save_name is None and job_baseline is not None:
            save_name = job_baseline.save
        try:
            if save_name is not None:
                check_name(save_name)
            if baseline is not None and not worker:
                _check_baseline(baseline, save_name, Path(baselines_dir), base_dir)
            config = parse_gate(gate) if gate else None
        except (BaselineError, GateError) as exc:
            raise GateSetupError(str(exc)) from None
        if repeats < 1:
            raise GateSetupError(f"--infer-repeat must be at least 1, got {repeats}")
        history = HistoryOptions()
        if job_baseline is not None:
            history = HistoryOptions(window=job_baseline.window or history.window,
                                     min_runs=job_baseline.min_runs or history.min_runs,
                                     branch=job_baseline.branch)
        if baseline == HISTORY and store_url is None:
            raise GateSetupError("--infer-baseline history needs the results store, which is "
                                 "off (--infer-store none): name one with --infer-store URL")
        return cls(baseline_ref=baseline, save_name=save_name, gate=config,
                   enabled=not no_gate, force=force, repeats=repeats, runs_dir=Path(runs_dir),
                   baselines_dir=Path(baselines_dir), base_dir=base_dir, store_url=store_url,
                   history=history)

    # -- at the end of the session
    def compare(self, new_doc: dict, exclude=()) -> dict | None:
        """Compare the finished session with the baseline (and list paired verdicts);
        None when there is nothing to say."""
        base_doc, label = None, None
        if self.baseline_ref == HISTORY:
            return self._compare_history(new_doc)
        if self.baseline_ref is not None:
            try:
                path = resolve(self.baseline_ref, runs_dir=self.runs_dir,
                               baselines_dir=self.baselines_dir, base=self.base_dir,
                               exclude=exclude)
            except BaselineError as exc:
                path = None
                self.notes.append((f"{exc}: nothing compared", True))
            if path is None and not self.notes:
                where = (f"no earlier run in {self.runs_dir}" if self.baseline_ref == "latest"
                         else f"no baseline named {self.baseline_ref!r} yet "
                              f"({self.baselines_dir / (self.baseline_ref + '.json')})")
                self.notes.append((f"{where}: nothing compared", True))
            if path is not None:
                try:
                    base_doc = load_run(path)
                    base_doc["path"] = str(path)
                    self.baseline_path = path
                    label = (base_doc.get("baseline") or {}).get("name") or path.name
                except (RunFileError, ValueError) as exc:
                    self.notes.append((f"baseline {path}: {exc}: nothing compared", True))
        paired = [r for r in typed_results(new_doc) if r.ab is not None and not in_search(r)]
        if base_doc is None and not paired:
            return None
        self.comparison = compare_runs(base_doc, new_doc, self.gate, self.force,
                                       base_label=label)
        self.comparison["enabled"] = self.enabled
        if not self.enabled:
            self.comparison["failed"] = False
        return self.comparison

    def _compare_history(self, new_doc: dict) -> dict | None:
        from ..store.db import ResultStore  # lazy: sqlalchemy
        from .history import compare_with_history  # lazy: sqlalchemy
        try:
            store = ResultStore.open(self.store_url)
            try:
                self.comparison = compare_with_history(store, new_doc, self.gate, self.history)
            finally:
                store.close()
        except Exception as exc:  # noqa: BLE001 - the results matter more than the verdicts
            self.notes.append((f"{_store_problem(exc, self.store_url)}: nothing compared with "
                               f"the history", True))
            return None
        self.comparison["enabled"] = self.enabled
        if not self.enabled:
            self.comparison["failed"] = False
        return self.comparison

    def record(self, run_doc: dict, source: Path | None, recorded_at: str) -> None:
        """Add the finished run to the results store; a store that cannot take it is one
        warning (the run file is already written)."""
        if self.store_url is None:
            return
        from ..store.db import ResultStore  # lazy: sqlalchemy
        try:
            store = ResultStore.open(self.store_url)
            try:
                done = store.record(run_doc, source, recorded_at)
            finally:
                store.close()
        except Exception as exc:  # noqa: BLE001 - the run file is safe; say what went wrong
            self.notes.append((f"{_store_problem(exc, self.store_url)}; the run file has every "
                               f"result: python -m pytest_inferbench store import "
                               f"{source or 'RUN'}", True))
            return
        self.recorded = (done.run_id, done.results)

    def save_baseline(self, run_doc: dict, source: Path | None, saved_at: str) -> None:
        if self.save_name is None:
            return
        self.saved_processes = max((r.fresh_process.of for r in typed_results(run_doc)
                                    if r.fresh_process is not None), default=0)
        try:
            self.saved = save(self.save_name, run_doc, self.baselines_dir, source, saved_at)
        except OSError as exc:
            self.notes.append((f"baseline {self.save_name} was not saved: "
                               f"{exc.strerror or exc}", True))

    @property
    def failed(self) -> bool:
        """A stored-baseline regression that gates (paired ones fail their own items)."""
        c = self.comparison
        return bool(self.enabled and c and c["gated"] and c["regressions"]["stored"])

    def section(self) -> list[tuple[str, dict]]:
        """Terminal lines with their markup, for the "inferbench gate" section."""
        out = []
        if self.comparison is not None:
            text = render_text(self.comparison).splitlines()
            head = text[0]
            color = ({"red": True, "bold": True} if self.comparison["failed"]
                     else {"yellow": True} if "not gated" in head
                     or self.comparison["counts"]["undetermined"] else {"green": True})
            out.append((head, color))
            for line in text[1:]:
                markup = {}
                if line.startswith("REGRESSION"):
                    markup = {"red": True, "bold": True}
                elif line.startswith(("undetermined", "warning")):
                    markup = {"yellow": True}
                elif line.startswith("improvement"):
                    markup = {"green": True}
                out.append((line, markup))
            if not self.enabled and self.comparison["counts"]["regression"]:
                out.append(("--infer-no-gate: regressions are reported, not failed",
                            {"yellow": True}))
        for text, warn in self.notes:
            out.append((("warning: " if warn else "") + text, {"yellow": True} if warn else {}))
        if self.saved is not None:
            runs = ""
            if self.saved_processes:
                runs = (f" with {self.saved_processes} fresh processes per cell (the noise "
                        f"between processes kept)")
            elif self.repeats > 1:
                runs = f" with {self.repeats} repeats (A/A noise kept)"
            out.append((f"saved baseline {self.save_name}{runs}: {self.saved}", {}))
        return out


def _check_baseline(baseline: str, save_name: str | None, baselines_dir: Path,
                    base_dir: Path) -> None:
    """Fail fast on a baseline that names nothing: a CI job with a mistyped name would
    otherwise gate nothing and pass. A name the same session saves (--infer-save NAME) is
    the documented way to create it; `latest` and `history` find their runs later."""
    if baseline in ("latest", HISTORY):
        return
    if is_path(baseline):
        p = Path(baseline)
        if not (p if p.is_absolute() else base_dir / p).is_file():
            raise BaselineError(f"baseline {baseline}: no such file")
        return
    check_name(baseline)
    if baseline == save_name or Path(baselines_dir, f"{baseline}.json").is_file():
        return
    saved = sorted(p.stem for p in baselines_dir.glob("*.json") if not p.name.startswith("."))
    raise BaselineError(
        f"no baseline named {baseline!r} in {baselines_dir} (saved: "
        f"{', '.join(saved) or 'none'}); to create it, add --infer-save {baseline} (this run "
        f"then compares with nothing), or name a saved baseline, a run file, latest or history")


def _store_problem(exc: Exception, url: str | None) -> str:
    """One line for a store failure: a StoreError says it all; anything else is named."""
    if type(exc).__name__ == "StoreError":
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"results store {shown(url or '')}: failed ({type(exc).__name__}: {first})"


__all__ = ["GateSetupError", "SessionGate", "is_path"]
