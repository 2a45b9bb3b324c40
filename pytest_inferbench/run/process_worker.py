"""The child end of a measurement in a fresh process (run/fresh_process.py).

    python -m pytest_inferbench.run.process_worker OUT.json  < job.json

The job (stdin, JSON): the cell, the artifact cache's root, the parent's working directory and
the sys.path entries where the user's factories live, the rootdir, and whether to report
progress. The child measures the cell as the session would (run/cell.py's run_cell), then
writes {"ok": true, "result": ...} or {"ok": false, "unavailable"|"error": ...} to OUT.json,
atomically, so that a file that exists is complete. Progress goes to stdout as marked lines,
at most four a second; everything else the user's code prints is left alone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ..core.errors import CellStepError, RuntimeUnavailable
from ..models.cache import ArtifactCache
from ..spec import Cell
from .cell import run_cell

PROGRESS_MARK = "\x1einferbench-progress"
PROGRESS_EVERY_S = 0.25


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    job = json.load(sys.stdin)
    os.chdir(job["cwd"])
    sys.path[:0] = [p for p in job["sys_path"] if p not in sys.path]
    payload = measure(job)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, default=str))
    tmp.replace(out)
    return 0


def measure(job: dict) -> dict:
    """The cell's Result, or why there is none, as JSON."""
    try:
        cell = Cell.model_validate(job["cell"])
        progress = _progress_printer() if job.get("progress") else None
        result = run_cell(cell, ArtifactCache(job["cache_root"]), progress,
                          rootdir=job.get("rootdir"))
        return {"ok": True, "result": result.to_json()}
    except RuntimeUnavailable as exc:
        return {"ok": False, "unavailable": str(exc)}
    except CellStepError as exc:
        return {"ok": False, "error": str(exc), "recorded": exc.recorded}
    except Exception as exc:  # noqa: BLE001 - reported by the parent as the cell's failure
        text = str(exc).strip()
        return {"ok": False, "error": f"{type(exc).__name__}: {text}" if text
                else type(exc).__name__}


def _progress_printer():
    last = [0.0]

    def progress(elapsed: float, queries: int, p99: float | None) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            print(PROGRESS_MARK, elapsed, queries, "nan" if p99 is None else p99, flush=True)
    return progress


if __name__ == "__main__":
    sys.exit(main(sys.argv))
