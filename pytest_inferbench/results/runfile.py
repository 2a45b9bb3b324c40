"""Run files: one JSON file per session, plus an append-only journal while it runs.

Format (documented in docs/results.md; `python -m pytest_inferbench schema` prints it):
    {"format": "pytest-inferbench-run", "version": 2, "name": ..., "provenance": {...},
     "results": [<Result>, ...]}
Every reader goes through `parse_run`: the document is brought to version 2 (results/upgrade.py)
and validated by the RunFile model, whose results are typed Results.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.result import Result
from .upgrade import FORMAT, VERSION, upgrade, upgrade_result


class RunFile(BaseModel):
    """One session's run file, version 2."""
    model_config = ConfigDict(extra="forbid")
    format: Literal["pytest-inferbench-run"] = FORMAT
    version: Literal[2] = VERSION
    name: str | None = None              # the job's name, or "session"
    # host, hardware, versions, git, argv, start/end time (measure/provenance.py): facts of
    # the machine, whose keys vary with what it has (GPUs, git)
    provenance: dict[str, Any] = Field(default_factory=dict)
    results: list[Result] = Field(default_factory=list)
    partial: bool = False                # read from a journal: the session did not finish
    repeats: int | None = None           # --infer-repeat N
    comparison: dict[str, Any] | None = None   # the gate's report (gate/compare.py)
    # cells measured more than once: their noise split and resolution (results/noise.py)
    noise: list[dict[str, Any]] | None = None
    baseline: dict[str, Any] | None = None     # a saved baseline's header (gate/baselines.py)
    followers: dict[str, Any] | None = None    # per follower host: inventory and facts
    store_run: int | None = None         # read from the results store: its run id
    # top-level keys of another version that this one does not declare (results/upgrade.py)
    unknown_fields: dict[str, Any] | None = None

    def as_doc(self, json_results: bool = False) -> dict:
        """The run as a dict (what load_run has always returned): results as Result objects,
        or as JSON with json_results; keys left at their defaults omitted."""
        doc = self.model_dump(mode="json", exclude={"results"}, exclude_defaults=True)
        doc.update(format=self.format, version=self.version, name=self.name,
                   provenance=self.provenance)
        doc["results"] = [r.to_json() for r in self.results] if json_results \
            else list(self.results)
        return doc


def parse_run(doc: dict, where: str = "run") -> RunFile:
    """THE conversion: a run document of any version (a run file, a journal, a store's run)
    upgraded to version 2 and validated into the typed model."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RunFileError(f"{where}: not a pytest-inferbench run file "
                           f"(no \"format\": \"{FORMAT}\")")
    try:
        return RunFile.model_validate(upgrade(doc))
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()
        raise RunFileError(f"{where}: not a valid version-{VERSION} run file: "
                           f"{'; '.join(first[:3])}") from None


def typed_results(doc: dict) -> list[Result]:
    """A run document's results as typed Results: as load_run gave them, or, for a document
    held in memory as JSON (the session's own, a saved baseline's), through parse_run."""
    results = doc.get("results", [])
    if all(isinstance(r, Result) for r in results):
        return list(results)
    plain = [r.to_json() if isinstance(r, Result) else r for r in results]
    return parse_run({"format": FORMAT, "version": doc.get("version", 1),
                      "results": plain}, str(doc.get("name") or "run")).results


def parse_result(data: dict, version: int = 1) -> Result:
    """One stored result (the results store keeps results one by one) as a typed Result."""
    return Result.model_validate(upgrade_result(data, version))


class RunWriter:
    """Keeps every result as it arrives in a journal (JSON lines), so that a crash or Ctrl-C
    later in the session loses nothing already measured; writes the run file at the end."""

    def __init__(self, runs_dir: Path, name: str, provenance: dict, extra_path: Path | None):
        runs_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{os.getpid()}"
        self.path = runs_dir / f"{base}.json"
        self.journal = runs_dir / f"{base}.partial.jsonl"
        self.extra_path = extra_path
        self.name = name
        self.provenance = provenance
        self.results: list[dict] = []
        with open(self.journal, "w") as fh:
            fh.write(json.dumps({"provenance": provenance, "name": name}) + "\n")

    def add(self, result: dict) -> None:
        self.results.append(result)
        with open(self.journal, "a") as fh:
            fh.write(json.dumps(result) + "\n")

    def finish(self, end_time: str, extra: dict | None = None) -> list[Path]:
        """Write the run file (and the --infer-json copy); `extra`: top-level keys beside the
        results (e.g. "repeats", "comparison")."""
        self.provenance["end_time"] = end_time
        doc = {"format": FORMAT, "version": VERSION, "name": self.name,
               "provenance": self.provenance, "results": self.results, **(extra or {})}
        written = []
        for target in filter(None, (self.path, self.extra_path)):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_text(json.dumps(doc, indent=1))
            os.replace(tmp, target)
            written.append(target)
        self.journal.unlink(missing_ok=True)
        return written


class RunFileError(ValueError):
    pass


def load_run(path: str | Path) -> dict:
    """Read a run file (or a journal left by an interrupted session), of any version, into
    provenance + typed Results (through parse_run)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RunFileError(f"{path}: cannot read ({exc.strerror})") from None
    if path.suffix == ".jsonl":
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        head, rows = (lines[0], lines[1:]) if lines else ({}, [])
        # version 1: a journal says no version, and the upgrade is lossless on this version's
        # results, so a journal left by an older session reads too
        doc = {"format": FORMAT, "version": 1, "name": head.get("name"),
               "provenance": head.get("provenance", {}), "results": rows, "partial": True}
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunFileError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    return parse_run(doc, str(path)).as_doc()
