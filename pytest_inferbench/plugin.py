"""pytest hooks: options, spec collection, per-cell execution, results and the summary."""

from __future__ import annotations

import fnmatch
import os
import warnings
from pathlib import Path

import pytest

from .core.errors import CellStepError, SpecError
from .core.result import Result
from .fixture import make_bench
from .gate.session import GateSetupError, SessionGate
from .optimize.trials import run_search_cell
from .results.outcome import parse_fail_on, verdict_problems
from .run.cell import run_cell
from .run.fresh_process import run_in_fresh_process
from .run.paired import failure_message
from .runtimes.base import RuntimeUnavailable, check_cuda
from .schedule.facts import check_node
from .schedule.runs import BASELINE_PROCESSES, interleave, paired_processes, run_plan
from .schedule.worker import lease_for, misplaced, placement_here, run_device
from .serving.pool import group_by_server
from .session import FOLLOWERS_KEY, JOB_KEY, SCHED_KEY, STATE_KEY, SessionState
from .spec import Cell, Gate, load_job, load_spec
from .spec.followers import load_followers, tx_specs
from .store.url import resolve_url

# ----------------------------------------------------------------------------- options

def pytest_addoption(parser):
    group = parser.getgroup("inferbench", "inference benchmarking (pytest-inferbench)")
    group.addoption("--infer-config", metavar="FILE", default=None,
                    help="job file: defaults for every spec, and benchmarks of its own")
    group.addoption("--infer-json", metavar="PATH", default=None,
                    help="also write this session's run file to PATH")
    group.addoption("--infer-runs-dir", metavar="DIR", default=None,
                    help="where run files go (default: ini inferbench_runs_dir)")
    group.addoption("--infer-no-progress", action="store_true", default=False,
                    help="no live progress line while a cell runs")
    group.addoption("--infer-html", metavar="PATH", default=None,
                    help="write the HTML report here (default: the job's report.html, else "
                         "reports/<job name or 'session'>.html under rootdir)")
    group.addoption("--infer-no-html", action="store_true", default=False,
                    help="do not write the HTML report")
    group.addoption("--infer-save", metavar="NAME", default=None,
                    help="save this session as baseline NAME (.inferbench/baselines/NAME.json), "
                         "each cell measured in 5 fresh processes (or as --infer-processes, the "
                         "spec's `processes` or --infer-repeat say), their noise kept")
    group.addoption("--infer-baseline", metavar="NAME|PATH|latest|history", default=None,
                    help="compare with a saved baseline (a NAME that is not saved is a usage "
                         "error unless --infer-save NAME creates it), a run file, the newest "
                         "earlier run (latest), or each cell's earlier runs in the results "
                         "store (history); regressions fail the session")
    group.addoption("--infer-store", metavar="URL|PATH|none", default=None,
                    help="the results store every session is recorded in: a SQLite file "
                         "(default .inferbench/results.db), postgresql://..., or none (env "
                         "INFERBENCH_STORE, ini inferbench_store); --infer-baseline history "
                         "judges each cell against its earlier runs there")
    group.addoption("--infer-repeat", metavar="N", type=int, default=1,
                    help="run every cell N times, round-robin over the cells, to learn the "
                         "noise between runs (use with --infer-save)")
    group.addoption("--infer-processes", metavar="N", type=int, default=None,
                    help="measure every cell in N fresh worker processes, each its own item, so "
                         "that the gate sees the noise between processes (overrides the "
                         "specs' `processes`; default: the spec's, else 5 when --infer-save "
                         "saves a baseline without --infer-repeat, else the session's process)")
    group.addoption("--infer-gate", metavar="METRIC=CHANGE,...", default=None,
                    help="gate thresholds for every cell, e.g. p99=+10%%,throughput=-5%%"
                         "[,confidence=0.95]")
    group.addoption("--infer-no-gate", action="store_true", default=False,
                    help="compare and report, but never fail on a regression")
    group.addoption("--infer-gate-force", action="store_true", default=False,
                    help="gate even when the baseline ran on other hardware or library versions")
    group.addoption("--infer-fail-on", metavar="slo,invalid|none", default=None,
                    help="which of a cell's own verdicts fail its item: a missed SLO (slo), an "
                         "INVALID measurement (invalid); the others pass with a warning "
                         "(default: ini inferbench_fail_on, else none)")
    group.addoption("--infer-followers", metavar="FILE", default=None,
                    help="follower hosts and their devices (YAML, `followers:` as in the job "
                         "file); one xdist worker per device, placed by the two-tier scheduler")
    group.addoption("--infer-lease-timeout", metavar="SECONDS", type=float, default=3600.0,
                    help="how long a cell waits for its device while another benchmark (this "
                         "session's or another's) measures there (default 3600)")
    group.addoption("--infer-no-leases", action="store_true", default=False,
                    help="do not take device leases around cells (lets sessions overlap)")
    _addini(parser)


def _addini(parser) -> None:
    parser.addini("inferbench_spec_patterns", type="args",
                  default=["bench_*.yaml", "*.bench.yaml", "bench_*.yml", "*.bench.yml"],
                  help="file name patterns of benchmark specs to collect")
    parser.addini("inferbench_runs_dir", default=".inferbench/runs",
                  help="directory for run files, relative to rootdir")
    parser.addini("inferbench_store", default="",
                  help="results store URL or SQLite path (default .inferbench/results.db "
                       "under rootdir; none: off)")
    parser.addini("inferbench_fail_on", default="",
                  help="slo, invalid (comma- or space-separated) or none: which of a cell's own "
                       "verdicts fail its item (CI: slo,invalid); --infer-fail-on wins")
    parser.addini("inferbench_baselines_dir", default=".inferbench/baselines",
                  help="directory for named baselines (--infer-save), relative to rootdir")
    parser.addini("inferbench_cache_dir", default=".inferbench/cache",
                  help="directory for converted model artifacts, relative to rootdir "
                       "(env INFERBENCH_CACHE_DIR overrides)")


def pytest_configure(config):
    config.addinivalue_line("markers", "inferbench: a benchmark item generated from a YAML spec")
    job = None
    job_path = config.getoption("--infer-config")
    if job_path:
        try:
            job = load_job(job_path)
        except SpecError as exc:
            raise pytest.UsageError(f"--infer-config: {exc.render()}") from None
        if job.has_benchmarks and not _under_args(config, Path(job.path)):
            config.args.append(job.path)
    config.stash[JOB_KEY] = job
    _followers_to_workers(config, job)
    root = config.rootpath
    try:
        gate = SessionGate.from_options(
            baseline=config.getoption("--infer-baseline"),
            save_name=config.getoption("--infer-save"), gate=config.getoption("--infer-gate"),
            no_gate=config.getoption("--infer-no-gate"),
            force=config.getoption("--infer-gate-force"),
            repeats=config.getoption("--infer-repeat"), job=job,
            runs_dir=Path(root, config.getoption("--infer-runs-dir")
                          or config.getini("inferbench_runs_dir")),
            baselines_dir=Path(root, config.getini("inferbench_baselines_dir")),
            invocation_dir=config.invocation_params.dir,
            store_url=resolve_url(config.getoption("--infer-store")
                                  or os.environ.get("INFERBENCH_STORE")
                                  or config.getini("inferbench_store"), root),
            worker=hasattr(config, "workerinput"))
    except GateSetupError as exc:
        raise pytest.UsageError(f"inferbench: {exc}") from None
    state = SessionState(config, gate)
    try:
        state.fail_on = parse_fail_on(config.getoption("--infer-fail-on")
                                      or config.getini("inferbench_fail_on"))
    except ValueError as exc:
        raise pytest.UsageError(f"--infer-fail-on: {exc}") from None
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(state, "inferbench-session")


def _followers_to_workers(config, job) -> None:
    """--infer-followers (or the job's `followers`) -> one xdist --tx spec per device. Runs
    before xdist's own pytest_configure (trylast), which starts the distributed session from
    config.option.tx / dist; workers (config.workerinput) never distribute again."""
    path = config.getoption("--infer-followers")
    followers = None
    if path:
        try:
            followers = load_followers(Path(config.invocation_params.dir, path))
        except SpecError as exc:
            raise pytest.UsageError(f"--infer-followers: {exc.render()}") from None
    elif job is not None:
        followers = job.followers
    config.stash[FOLLOWERS_KEY] = followers
    if not followers or hasattr(config, "workerinput") or config.getoption("collectonly"):
        return
    if not config.pluginmanager.hasplugin("xdist"):
        raise pytest.UsageError("inferbench: followers run as pytest-xdist workers; install "
                                "pytest-xdist (or leave out `followers`/--infer-followers)")
    config.option.tx = [spec for spec, _ in tx_specs(followers)]
    if any(f.via != "local" or f.chdir for f in followers):   # chdir: a copy of rootdir
        from .schedule.xdist_scheduler import (
            args_relative_to_rootdir,  # lazy: pytest-xdist
        )
        args_relative_to_rootdir(config)
    if config.option.maxworkerrestart is None:   # as xdist's -n N: no endless restarts
        config.option.maxworkerrestart = str(4 * len(config.option.tx))
    if config.option.dist == "no":
        config.option.dist = "load"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist load` (what -n N and --infer-followers use) -> the two-tier scheduler."""
    if config.getvalue("dist") != "load":
        return None
    from .schedule.xdist_scheduler import (  # lazy: pytest-xdist
        CellTasks,
        TwoTierScheduling,
    )
    runs = Path(config.rootpath, config.getoption("--infer-runs-dir")
                or config.getini("inferbench_runs_dir"))
    sched = TwoTierScheduling(config, log, CellTasks(config.rootpath, config.stash.get(
        JOB_KEY, None), runs), followers=config.stash.get(FOLLOWERS_KEY, None))
    config.stash[SCHED_KEY] = sched
    return sched


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist controller, before a follower's worker starts: compare the leader's spec and
    model files with the follower's copy, and ask what it really has (schedule/facts.py)."""
    followers = node.config.stash.get(FOLLOWERS_KEY, None)
    if followers:
        check_node(node, followers, node.config.stash.get(JOB_KEY, None))


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
    """A worker crashed while running an item: run it again once on another worker."""
    retry = getattr(sched, "retry", None)
    if retry is None:
        return
    if retry(crashitem):
        report.outcome = "rerun"
        report.inferbench_rerun = True
    else:
        report.longrepr = f"{report.longrepr} (twice: not run again)"
        cell = sched.tasks_of.cell(crashitem)
        if cell is not None:                 # the run file lists the cell, failed, and why
            report.inferbench = [{"id": crashitem, "status": "failed",
                                  "cell": cell.model_dump(mode="json")}]


def pytest_report_teststatus(report, config):
    if getattr(report, "inferbench_rerun", False):
        return "rerun", "R", ("RERUN", {"yellow": True})
    return None


def _under_args(config, path: Path) -> bool:
    for arg in config.args:
        target = Path(config.invocation_params.dir, str(arg).split("::")[0]).resolve()
        if target == path or target in path.parents:
            return True
    return False


# ----------------------------------------------------------------------------- collection

def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    job = parent.config.stash.get(JOB_KEY, None)
    is_job = job is not None and Path(job.path) == file_path.resolve()
    patterns = parent.config.getini("inferbench_spec_patterns")
    if is_job or any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return SpecFile.from_parent(parent, path=file_path)
    return None


class SpecFile(pytest.File):
    def collect(self):
        job = self.config.stash.get(JOB_KEY, None)
        cells = load_spec(self.path, job=job, rootdir=self.config.rootpath)
        for cell in group_by_server(cells):     # one server launch for cells that share it
            item = CellItem.from_parent(self, name=cell.id, callobj=_cell_test,
                                        originalname=cell.model_label)
            item.cell = cell
            item.add_marker(pytest.mark.inferbench)
            for mark in cell.marks:
                item.add_marker(getattr(pytest.mark, mark))
            yield item

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, SpecError):
            return excinfo.value.render()
        return super().repr_failure(excinfo)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """Every run of every cell an item (schedule/runs.py: `processes`, --infer-repeat), in
    the order they run; then count the paired cells (the family their verdicts are
    corrected for)."""
    cells = [i for i in items if isinstance(i, CellItem)]
    state = config.stash.get(STATE_KEY, None)
    saving = state is not None and state.gate.save_name is not None
    try:
        plans = [run_plan(item.cell, config.getoption("--infer-repeat") or 1,
                          config.getoption("--infer-processes"),
                          BASELINE_PROCESSES if saving else None) for item in cells]
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    for item in cells:          # a paired cell starts its own pairs of processes
        if item.cell.ab is not None:
            pairs = paired_processes(item.cell, config.getoption("--infer-processes"))
            if pairs != item.cell.settings.processes:
                settings = item.cell.settings.model_copy(update={"processes": pairs})
                item.cell = item.cell.model_copy(update={"settings": settings})
    if any(p.runs > 1 or p.fresh for p in plans):
        ordered = []
        for item, k, plan in interleave(cells, plans):
            ordered.append(item if k == 1 else _repeat_of(item, k, "p" if plan.fresh else "r"))
            if plan.runs > 1:
                ordered[-1].inferbench_repeat = (k, plan.runs)
            if plan.fresh:
                ordered[-1].inferbench_process = (k, plan.runs)
        items[:] = [i for i in items if not isinstance(i, CellItem)] + ordered
    if state is not None:
        state.paired_cells = sum(1 for i in items
                                 if isinstance(i, CellItem) and i.cell.ab is not None)


def _repeat_of(item, k: int, tag: str = "r"):
    name = (f"{item.name[:-1]}-{tag}{k}]" if item.name.endswith("]")
            else f"{item.name}-{tag}{k}")
    clone = CellItem.from_parent(item.parent, name=name, callobj=_cell_test,
                                 originalname=item.originalname)
    clone.cell = item.cell
    for mark in item.own_markers:
        clone.add_marker(getattr(pytest.mark, mark.name)(*mark.args, **mark.kwargs))
    return clone


class CellItem(pytest.Function):
    """A pytest.Function per cell, so fixtures, -k, -m, --lf and xdist treat it as any test."""
    cell: Cell

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # pytest >= 9.2 keeps node ids structured (name + params); parse ours the same way as
        # the cache does, so --lf/--ff match "model[params]" ids across runs.
        node_id = getattr(self, "_id", None)
        if node_id is not None and hasattr(type(node_id), "parse"):
            self._id = type(node_id).parse(f"{self.parent.nodeid}::{self.name}")

    def reportinfo(self):
        return self.path, (self.cell.line or 1) - 1, self.name


def _cell_test(request):
    """Body of every generated item: measure the cell, or skip/fail with the reason."""

    item = request.node
    state = request.config.stash[STATE_KEY]
    progress = state.progress_for(item)
    cell = item.cell
    if cell.ab is not None and state.gate.gate is not None:    # --infer-gate applies here too
        cell = cell.model_copy(update={"gate": Gate(**state.gate.gate.to_json())})
    reason = misplaced(cell)
    if reason:
        _skip_at_spec_line(reason)
    place = placement_here(cell)
    if run_device(cell) != cell.device:        # a follower's GPU slot sees its GPU as cuda:0
        cell = cell.model_copy(update={"device": run_device(cell)})
    try:
        with lease_for(cell, item.nodeid, not request.config.getoption("--infer-no-leases"),
                       request.config.getoption("--infer-lease-timeout")) as lease:
            if cell.search is not None:     # one item, many trials: every result kept
                job = request.config.stash.get(JOB_KEY, None)
                results = run_search_cell(cell, state.cache, item.nodeid, progress,
                                          state.servers, rootdir=request.config.rootpath,
                                          per_hour=job.cost.per_hour if job and job.cost
                                          else None)
            elif hasattr(item, "inferbench_process"):
                if state.servers is not None:   # nothing idle beside the fresh process
                    state.servers.close()
                results = [run_in_fresh_process(cell, state.cache, *item.inferbench_process,
                                                progress, rootdir=request.config.rootpath)]
            else:
                results = [run_cell(cell, state.cache, progress, state.servers,
                                    paired_cells=state.paired_cells,
                                    rootdir=request.config.rootpath)]
        for result in results:
            result.placement = {**place, "lease_wait_s": lease["wait_s"], "colocated_with": []}
        result = results[0]
    except RuntimeUnavailable as exc:
        unavailable, failure = str(exc), None
    except Exception as exc:  # noqa: BLE001 - one cell failing must not hide the others
        unavailable, failure = None, _failure(exc)
    else:
        unavailable = failure = None
    finally:
        if progress is not None:
            progress.clear()
    # skip or fail outside the except blocks: one clean message, without "During handling
    # of the above exception" and a second copy of it
    if unavailable is not None:
        _skip_at_spec_line(unavailable)
    if failure is not None:
        message, recorded = failure
        item.inferbench_results = [Result(status="failed", reason=message,
                                          model={"label": cell.model_label, **recorded})]
        pytest.fail(message, pytrace=False)
    item.inferbench_results = results
    if result.status == "failed":       # measured, but it did not hold: numbers kept, item fails
        pytest.fail(result.reason or "failed", pytrace=False)
    _judge_verdicts(result, state.fail_on, cell)
    if result.ab is not None and result.ab.verdict == "regression" and state.gate.enabled:
        pytest.fail(failure_message(result), pytrace=False)


class InferbenchVerdictWarning(UserWarning):
    """A cell missed its SLO or measured INVALID, and --infer-fail-on does not fail on that."""


def _judge_verdicts(result: Result, fail_on: tuple[str, ...], cell: Cell) -> None:
    """A missed SLO or an INVALID measurement: fail the item (the kinds in `fail_on`) or pass
    it with a warning, so either way pytest's last line counts it. The numbers stay in the
    run file; `failed_on` tells the gate that the cell did measure (it compares it as
    before: a regression is often why an SLO is missed)."""
    problems = verdict_problems(result)
    failing = [(kind, text) for kind, text in problems if kind in fail_on]
    for kind, text in problems:
        if kind not in fail_on:     # located at the spec's line, where the cell is written
            warnings.warn_explicit(InferbenchVerdictWarning(
                f"{text} (--infer-fail-on {kind} fails the item)"), InferbenchVerdictWarning,
                str(cell.spec or "spec"), cell.line or 1)
    if failing:
        message = "; ".join(text for _, text in failing)
        result.status, result.reason = "failed", message
        result.failed_on = [kind for kind, _ in failing]
        pytest.fail(message, pytrace=False)


def _failure(exc: BaseException) -> tuple[str, dict]:
    """(message, what the failing step had recorded) for a cell that raised."""
    if isinstance(exc, CellStepError):
        return str(exc), exc.recorded
    text = str(exc).strip()
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__), {}


def _skip_at_spec_line(reason: str):
    """Skip, reported at the spec file's line (like a skip mark) rather than inside the plugin."""
    try:
        raise pytest.skip.Exception(reason, _use_item_location=True)
    except TypeError:  # pytest changed its private argument: plain skip, same reason
        pytest.skip(reason)


# ----------------------------------------------------------------------------- reporting

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    # Results ride on the report as plain JSON data, so they survive xdist's serialisation.
    payload = None
    cell = getattr(item, "cell", None)
    measured = getattr(item, "inferbench_results", None)
    if call.when == "call" and measured:
        payload = [r.to_json() for r in measured]
        for entry in payload:
            entry.setdefault("id", item.nodeid)
            if not entry.get("id"):
                entry["id"] = item.nodeid
            if cell is not None and not entry.get("cell"):   # a search's trials carry theirs
                entry["cell"] = cell.model_dump(mode="json")
            repeat = getattr(item, "inferbench_repeat", None)
            if repeat is not None:
                entry["repeat"], entry["repeats"] = repeat
    elif cell is not None and (call.when == "call" or (call.when == "setup" and not report.passed)):
        payload = [{"id": item.nodeid, "cell": cell.model_dump(mode="json")}]
    if payload is not None:
        report.inferbench = payload
    return report


# ----------------------------------------------------------------------------- fixture API

@pytest.fixture
def inferbench(request):
    """Benchmark your own code with the same engine as the YAML cells.

        def test_model(inferbench):
            result = inferbench(lambda: model(x), scenario="single_stream", min_duration="1s")
            assert result.latency.p99 < 5.0   # ms

    Pass a zero-argument callable, or a Runner plus `inputs` (dict of arrays). Settings are the
    spec's measurement fields (warmup, min_duration, max_duration, min_queries, ...).
    """
    state = request.config.stash[STATE_KEY]
    return make_bench(request.node, state)


@pytest.fixture
def inferbench_device(request):
    """The torch device a hand-written benchmark runs on, skipping with the reason when absent.

    Defaults to the first visible CUDA device (CUDA_VISIBLE_DEVICES is honoured: 'cuda:N' counts
    visible devices); parametrize indirectly for others:

        @pytest.mark.parametrize("inferbench_device", ["cpu", "cuda:1"], indirect=True)
    """
    name = getattr(request, "param", "cuda")
    try:
        check_cuda(name)
    except RuntimeUnavailable as exc:
        pytest.skip(str(exc))
    import torch
    return torch.device(name)
