"""Loading: a job file into its Job, a spec file into its cells (in file order, ids made
unique), and the spec's directory made importable for factories."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..core.errors import SpecError
from .axes import check_matrix_size
from .cell import Cell
from .document import Document, check_keys, check_name
from .followers import parse_followers
from .gate import gate_section
from .job import BaselineSection, CostSection, Job, ReportSection
from .matrix import SpecContext, check_defaults, expand_entry

JOB_KEYS = ("name", "defaults", "benchmarks", "report", "cost", "gate", "baseline", "followers")
SPEC_KEYS = ("name", "defaults", "benchmarks", "gate")


def load_job(path: str | Path) -> Job:
    path = Path(path).resolve()
    if not path.exists():
        raise SpecError("job file not found", file=path)
    doc = Document(path)
    data = doc.data if doc.data is not None else {}
    check_keys(doc, data, JOB_KEYS, (), "the top level of a job file")
    defaults = check_defaults(doc, data.get("defaults"), ("defaults",))
    name = check_name(doc, data.get("name"), ("name",))
    report = (doc.validate(ReportSection, data["report"], ("report",))
              if data.get("report") is not None else None)
    cost = doc.validate(CostSection, data["cost"], ("cost",)) if data.get("cost") is not None \
        else None
    gate = gate_section(doc, data["gate"], ("gate",), None) if data.get("gate") is not None else None
    baseline = (doc.validate(BaselineSection, data["baseline"], ("baseline",))
                if data.get("baseline") is not None else None)
    if baseline is not None and baseline.compare and _is_path(baseline.compare):
        baseline = baseline.model_copy(update={"compare": str(
            (path.parent / baseline.compare).resolve())})
    followers = (parse_followers(data["followers"], path, doc.lines)
                 if data.get("followers") is not None else None)
    return Job(path=str(path), name=str(name or path.stem), defaults=defaults,
               has_benchmarks=bool(data.get("benchmarks")), report=report, cost=cost,
               gate=gate, baseline=baseline, followers=followers)


def _is_path(ref: str) -> bool:
    """A baseline reference that names a file rather than a saved baseline or `latest`."""
    return "/" in ref or ref.endswith((".json", ".jsonl"))


def importable(directory: Path) -> None:
    """Put a spec's directory first on the import path, as pytest does for a test's directory,
    so a factory module next to the spec imports; PYTHONPATH carries it to launched servers."""
    where = str(directory)
    if where not in sys.path:
        sys.path.insert(0, where)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if where not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([where, *parts])


def load_spec(path: str | Path, job: Job | None = None, rootdir: str | Path | None = None
              ) -> list[Cell]:
    """Parse, validate and expand one spec file into its cells (in file order)."""
    path = Path(path).resolve()
    doc = Document(path)
    data = doc.data
    if data is None:
        raise doc.error("the file is empty; expected 'name' and 'benchmarks'")
    is_job = job is not None and Path(job.path) == path
    # the job file is collected as a spec too: its report/cost sections are the job's
    check_keys(doc, data, JOB_KEYS if is_job else SPEC_KEYS, (), "the top level of a spec file")
    spec_defaults = check_defaults(doc, data.get("defaults"), ("defaults",))
    defaults = {**(job.defaults if job else {}), **spec_defaults}
    benchmarks = data.get("benchmarks")
    if benchmarks is None and is_job:
        return []
    if not isinstance(benchmarks, list) or not benchmarks:
        raise doc.error("expected a non-empty list of benchmarks", ("benchmarks",))
    try:
        rel = str(path.relative_to(Path(rootdir).resolve())) if rootdir else str(path)
    except ValueError:
        rel = str(path)
    name = check_name(doc, data.get("name"), ("name",))
    gate = job.gate if job else None
    if data.get("gate") is not None and not is_job:
        gate = gate_section(doc, data["gate"], ("gate",), gate)
    ctx = SpecContext(doc, defaults, rel, str(name or path.stem), gate,
                      cost=job.cost if job else None)
    raw_cells = []
    for index, entry in enumerate(benchmarks):
        raw_cells.extend(expand_entry(ctx, entry, index))
        check_matrix_size(doc, [len(raw_cells)], ("benchmarks", index))
    if any(getattr(raw["model"], "kind", None) == "factory" for raw in raw_cells):
        importable(path.parent)
    cells, seen = [], {}
    for raw in raw_cells:
        probe = Cell.model_construct(**raw)
        base_id = f"{raw['model_label']}[{probe.params_label()}]"
        seen[base_id] = seen.get(base_id, 0) + 1
        cell_id = base_id if seen[base_id] == 1 else f"{base_id[:-1]}#{seen[base_id]}]"
        cells.append(Cell(id=cell_id, **raw))
    return cells
