"""One measurement of a cell in a fresh worker process (`processes: N`).

Each process has its own speed: where its pages and threads land, address-space and hash
randomisation, what its allocator did first (pyperf and JMH measure in many fresh processes
for this reason). Repeats inside one process never see that part of the noise, so a gate fed
them learns too small a noise and calls one process's luck a change. A cell with `processes:
N` is measured N times, each time in a new interpreter that loads the model and measures it
as the session would (run/process_worker.py); the session's own process only waits.

A process that crashes or outlives `process_timeout` fails its own item, naming the process
(index, pid, exit status, the last lines it wrote to stderr); the other processes' results
are separate items and are kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from ..core.errors import CellStepError, RuntimeUnavailable
from ..core.result import Result
from ..workload.samples import Progress
from .process_worker import PROGRESS_MARK
from .remote import PROCESS_ENV, user_paths

STDERR_LINES = 12          # the tail of a crashed process's stderr, in its failure message
LOAD_ALLOWANCE_S = 300.0   # the default timeout's allowance for start-up, loading, converting


def process_timeout(cell) -> float:
    """How long one process may take, start to report: the cell's `process_timeout`, else
    the longest the measurement may take plus a start-up and loading allowance."""
    settings = cell.settings
    if settings.process_timeout is not None:
        return settings.process_timeout
    warmup = settings.warmup if isinstance(settings.warmup, float) else 0.0
    return LOAD_ALLOWANCE_S + warmup + 2 * settings.max_duration


def run_in_fresh_process(cell, cache, index: int, of: int, progress: Progress | None = None,
                         rootdir=None) -> Result:
    """Measure `cell` in a new interpreter; the Result, with `fresh_process` saying which."""
    name = f"fresh process {index} of {of}"
    job = {"cell": cell.model_dump(mode="json"), "cache_root": str(cache.root),
           "cwd": os.getcwd(), "sys_path": user_paths(), "progress": progress is not None,
           "rootdir": None if rootdir is None else str(rootdir)}
    with tempfile.TemporaryDirectory(prefix="inferbench-process-") as tmp:
        out = Path(tmp, "result.json")
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_inferbench.run.process_worker", str(out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, PROCESS_ENV: f"{index}/{of}"},
            start_new_session=True)     # its own group: a timeout kills what it started too
        stderr, readers = _drain(proc, progress)
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        _wait(proc, process_timeout(cell), f"{name} (pid {proc.pid})")
        for reader in readers:      # the pipes close with the process: its last lines in
            reader.join(5.0)
        wall = time.perf_counter() - started
        if not out.exists():
            raise CellStepError(f"{name} (pid {proc.pid})", ValueError(
                f"exited with {_status(proc.returncode)} before reporting a result"
                + _tail(stderr)))
        payload = json.loads(out.read_text())
    return _result(payload, name, proc.pid, index, of, wall)


def _result(payload: dict, name: str, pid: int, index: int, of: int, wall: float) -> Result:
    if "unavailable" in payload:
        raise RuntimeUnavailable(payload["unavailable"])
    if not payload["ok"]:
        raise CellStepError(f"{name} (pid {pid})", ValueError(payload["error"]),
                            payload.get("recorded"))
    result = Result.model_validate(payload["result"])
    result.fresh_process = {"index": index, "of": of, "pid": pid, "wall_s": round(wall, 3)}
    return result


def _drain(proc, progress: Progress | None) -> tuple[deque, list[threading.Thread]]:
    """Read the child's stdout (progress lines) and stderr (kept: its last lines) in threads,
    so that a chatty child never blocks on a full pipe."""
    tail: deque = deque(maxlen=STDERR_LINES)

    def stdout():
        for line in proc.stdout:
            if progress is not None and line.startswith(PROGRESS_MARK):
                elapsed, queries, p99 = line.split()[1:4]
                progress(float(elapsed), int(queries), None if p99 == "nan" else float(p99))

    def stderr():
        for line in proc.stderr:
            tail.append(line.rstrip())

    readers = [threading.Thread(target=target, daemon=True) for target in (stdout, stderr)]
    for reader in readers:
        reader.start()
    return tail, readers


def _wait(proc, timeout: float, who: str) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise CellStepError(who, ValueError(
            f"did not finish within {timeout:g} s (process_timeout) and was killed")) from None


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _tail(lines: deque) -> str:
    return ("; its last lines on stderr:\n    " + "\n    ".join(lines)) if lines else ""
