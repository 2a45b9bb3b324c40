"""Run files: one JSON file per session, plus an append-only journal while it runs.

Format (documented in docs/results.md):
    {"format": "pytest-inferbench-run", "version": 1, "name": ..., "provenance": {...},
     "results": [<Result>, ...]}
Readers ignore unknown fields and fill missing ones with defaults, so files from older and
newer versions both read.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from ..core.result import Result

FORMAT = "pytest-inferbench-run"
VERSION = 1


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
    """Read a run file (or a journal left by an interrupted session) into provenance + Results."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RunFileError(f"{path}: cannot read ({exc.strerror})") from None
    if path.suffix == ".jsonl":
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        head, rows = (lines[0], lines[1:]) if lines else ({}, [])
        doc = {"format": FORMAT, "version": VERSION, "name": head.get("name"),
               "provenance": head.get("provenance", {}), "results": rows, "partial": True}
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunFileError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RunFileError(f"{path}: not a pytest-inferbench run file (no \"format\": \"{FORMAT}\")")
    doc["results"] = [Result.model_validate(r) for r in doc.get("results", [])]
    return doc
