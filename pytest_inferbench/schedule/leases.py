"""Device leases: one lock file per resource of a host, held (fcntl.flock) while a cell runs,
so that two workers, or two pytest sessions, never measure on one device at once.

Resources and modes are policy.resources(): "<host>/cpu" and "<host>/cuda:N", exclusive or
shared. The files live under INFERBENCH_LEASE_DIR (default /tmp/inferbench-leases), one
machine-wide directory, so every session on the machine sees the same locks. Locks are taken
in sorted order and all at once (nothing is held while waiting for the rest), so two holders
never deadlock; the kernel drops a lock when its process dies, so a crash leaves none behind.
A lease that cannot be had within the timeout raises LeaseTimeout naming the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

DEFAULT_DIR = "/tmp/inferbench-leases"
DEFAULT_TIMEOUT_S = 3600.0


class LeaseTimeout(RuntimeError):
    pass


def lease_dir() -> Path:
    return Path(os.environ.get("INFERBENCH_LEASE_DIR") or DEFAULT_DIR)


def _file_for(directory: Path, resource: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", resource.replace("/", "__"))
    return directory / f"{safe}.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not info:
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} ({info.get('who') or '?'}, since {since})"


@contextmanager
def hold(res, who: str = "", directory: Path | None = None,
         timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = 0.05):
    """Hold every (resource, exclusive) of `res` for the with-block; yields a dict with
    `wait_s` (time spent waiting for other holders) and `resources`."""
    directory = Path(directory) if directory is not None else lease_dir()
    _prepare(directory)
    wanted = sorted(dict(res).items())
    start = time.monotonic()
    fds: list[int] = []
    info = {"wait_s": 0.0, "resources": [r for r, _ in wanted]}
    try:
        while (blocked := _take_all(directory, wanted, who, fds)) is not None:
            _release(fds)                        # hold nothing while waiting
            waited = time.monotonic() - start
            if waited > timeout_s:
                raise LeaseTimeout(
                    f"device {blocked[0]} has been busy for {waited:.0f}s (last taken "
                    f"exclusively by {_holder(blocked[1])}; lock file {blocked[1]}): another "
                    f"benchmark is measuring there. Wait for it, or raise "
                    f"--infer-lease-timeout")
            time.sleep(poll_s)
        info["wait_s"] = round(time.monotonic() - start, 4)
        yield info
    finally:
        _release(fds)


def _prepare(directory: Path) -> None:
    """The lease directory, made shared by every user's sessions if it is new."""
    try:
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            try:
                directory.chmod(0o1777)          # shared by every user's sessions, like /tmp
            except OSError:
                pass
        probe = os.open(directory / ".probe", os.O_RDWR | os.O_CREAT, 0o666)
        os.close(probe)
    except PermissionError:
        pass                                     # another user's directory: locks read-only
    except OSError as exc:
        raise OSError(f"device leases: cannot use the lease directory {directory} "
                      f"({exc.strerror}); set INFERBENCH_LEASE_DIR to a writable directory, or "
                      f"pass --infer-no-leases") from None


def _take_all(directory: Path, wanted, who: str, fds: list[int]) -> tuple | None:
    """Lock every resource without waiting, appending each lock's fd to `fds`; the first
    that is busy, as (resource, lock file), or None when all are held."""
    for resource, exclusive in wanted:
        path = _file_for(directory, resource)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            writable = True
        except PermissionError:          # another user's file: lock it read-only
            fd, writable = os.open(path, os.O_RDONLY), False
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return resource, path
        fds.append(fd)
        if exclusive and writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "who": who,
                                      "since": time.time()}).encode(), 0)
    return None


def _release(fds: list[int]) -> None:
    for fd in fds:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    fds.clear()
