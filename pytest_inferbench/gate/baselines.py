"""Named baselines: `.inferbench/baselines/NAME.json`, a run file plus what its repeats say
about the noise, and how a reference (`latest`, a name, a path) finds a run.

A baseline file is a run file (load_run and the report read it as one) with a `baseline` key:

    "baseline": {"name": "nightly", "saved_at": "...", "source": "<run file>",
                 "repeats": 5,
                 "noise": {"<cell>": {"repeats": 5,
                                      "p50": {"sd": 0.021, "max_ratio": 1.06}, ...}}}

`noise` summarises the A/A spread of each cell's repeats (sd of the log values, as a
fraction, and the largest ratio between two repeats); the comparison recomputes it from the
repeated results themselves, so a plain run file with repeats serves as well.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from ..core.result import Result
from ..results.cells import in_search
from ..results.runfile import typed_results
from .compare import display, group_by_config, is_measured, observe

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NOISE_METRICS = ("p50", "p90", "p99", "mean", "throughput")


class BaselineError(ValueError):
    """A reference that names nothing usable; the message says what was looked for."""


def is_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref or ref.endswith((".json", ".jsonl"))


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise BaselineError(f"baseline name {name!r}: use letters, digits, '.', '_' and '-' "
                            f"(it becomes a file name)")
    return name


def latest_run(runs_dir: Path, exclude=()) -> Path | None:
    """The newest complete run file in runs_dir, other than those in `exclude`."""
    skip = {Path(p).resolve() for p in exclude}
    files = [p for p in Path(runs_dir).glob("*.json")
             if not p.name.startswith(".") and p.resolve() not in skip]
    if not files:
        return None
    return max(files, key=lambda p: (p.stat().st_mtime, p.name))


def resolve(ref: str, *, runs_dir: Path, baselines_dir: Path, base: Path | None = None,
            exclude=()) -> Path | None:
    """`latest` -> the newest run file (not one in `exclude`); a path -> that file (relative
    to `base`); a name -> baselines_dir/NAME.json. None when a name or `latest` finds nothing
    (a first run has no baseline); BaselineError for a path that does not exist."""
    if ref == "latest":
        return latest_run(runs_dir, exclude)
    if is_path(ref):
        path = Path(ref)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise BaselineError(f"baseline {ref}: no such file")
        return path
    path = Path(baselines_dir, f"{check_name(ref)}.json")
    return path if path.is_file() else None


def noise_summary(results: list[Result]) -> dict:
    """Per cell with repeats: the A/A spread of each metric over its repeats."""
    out = {}
    for rows in group_by_config(r for r in results
                                if r.ab is None and not in_search(r)).values():
        rows = [r for r in rows if is_measured(r)]
        if len(rows) < 2:
            continue
        entry = {"repeats": len(rows)}
        for metric in NOISE_METRICS:
            values = [observe(r, metric).value for r in rows]
            logs = [math.log(v) for v in values if v and v > 0]
            if len(logs) < 2:
                continue
            mean = sum(logs) / len(logs)
            sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
            entry[metric] = {"sd": round(math.expm1(sd), 6),
                             "max_ratio": round(math.exp(max(logs) - min(logs)), 6)}
        out[display(rows[0])] = entry
    return out


def save(name: str, run_doc: dict, baselines_dir: Path, source: Path | None,
         saved_at: str) -> Path:
    """Write the run as baseline NAME (atomically; an older baseline of that name is replaced)."""
    check_name(name)
    doc = dict(run_doc)
    results = [r.to_json() if hasattr(r, "to_json") else r for r in doc.get("results", [])]
    doc["results"] = results
    doc.pop("comparison", None)
    doc["baseline"] = {"name": name, "saved_at": saved_at,
                       "source": str(source) if source else None,
                       "repeats": doc.get("repeats") or 1,
                       "noise": noise_summary(typed_results(run_doc))}
    target = Path(baselines_dir, f"{name}.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, target)
    return target
