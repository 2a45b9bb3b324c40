"""Device leases: one lock file per resource of a host, held (fcntl.flock) while a cell runs,
so that two workers, or two pytest sessions, never measure on one device at once.

Resources and modes are policy.resources(): "<host>/cpu" and "<host>/cuda:N", exclusive or
shared. Locks are taken in sorted order and all at once (nothing is held while waiting for the
rest), so two holders never deadlock; the kernel drops a lock when its process dies, so a crash
leaves none behind. A lease that cannot be had within the timeout raises LeaseTimeout naming
the holder.

Where the files live: by default a per-user directory, /tmp/inferbench-leases-<uid> (mode
0700), so every session of one user on the machine sees the same locks and no other user can
plant or link files there. It is not $XDG_RUNTIME_DIR: an ssh or cron session may lack it, and
two sessions of one user must agree on the place. Sessions of several users share leases only
when INFERBENCH_LEASE_DIR names a directory: it is made sticky and world-writable (1777, like
/tmp). In both modes the directory is opened once, not followed if it is a link (the private
one), and every lock file is opened relative to it with O_NOFOLLOW: a planted symbolic link is
refused, never followed. A private directory or lock file owned by another user, or writable
by group or others, is refused with LeaseDirError naming the path and why.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import time
from contextlib import contextmanager
from pathlib import Path

SHARED_ENV = "INFERBENCH_LEASE_DIR"
DEFAULT_TIMEOUT_S = 3600.0
_FIX = (f"remove it, or set {SHARED_ENV} to a directory to share with other users, or pass "
        f"--infer-no-leases")


class LeaseTimeout(RuntimeError):
    pass


class LeaseDirError(OSError):
    """The lease directory or a lock file is not safe to use (says which path and why)."""


def default_dir() -> Path:
    return Path(f"/tmp/inferbench-leases-{os.geteuid()}")


def lease_dir() -> tuple[Path, bool]:
    """(directory, shared): INFERBENCH_LEASE_DIR (shared between users), else the private
    per-user default."""
    configured = os.environ.get(SHARED_ENV)
    return (Path(configured), True) if configured else (default_dir(), False)


def _file_for(directory: Path, resource: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", resource.replace("/", "__"))
    return directory / f"{safe}.lock"


def _holder(dfd: int, path: Path) -> str:
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        with os.fdopen(fd) as f:
            info = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not info:
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} ({info.get('who') or '?'}, since {since})"


@contextmanager
def hold(res, who: str = "", directory: Path | None = None,
         timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = 0.05, shared: bool = False):
    """Hold every (resource, exclusive) of `res` for the with-block; yields a dict with
    `wait_s` (time spent waiting for other holders) and `resources`. Without `directory`,
    lease_dir() decides the place and whether it is shared."""
    if directory is None:
        directory, shared = lease_dir()
    directory = Path(directory)
    dfd = open_dir(directory, shared)
    wanted = sorted(dict(res).items())
    start = time.monotonic()
    fds: list[int] = []
    info = {"wait_s": 0.0, "resources": [r for r, _ in wanted]}
    try:
        while (blocked := _take_all(dfd, directory, wanted, who, fds, shared)) is not None:
            _release(fds)                        # hold nothing while waiting
            waited = time.monotonic() - start
            if waited > timeout_s:
                raise LeaseTimeout(
                    f"device {blocked[0]} has been busy for {waited:.0f}s (last taken "
                    f"exclusively by {_holder(dfd, blocked[1])}; lock file {blocked[1]}): "
                    f"another benchmark is measuring there. Wait for it, or raise "
                    f"--infer-lease-timeout")
            time.sleep(poll_s)
        info["wait_s"] = round(time.monotonic() - start, 4)
        yield info
    finally:
        _release(fds)
        os.close(dfd)


def _refuse(path: Path, why: str) -> LeaseDirError:
    return LeaseDirError(f"device leases: refusing {path}: {why}; {_FIX}")


def _check(st: os.stat_result, path: Path, shared: bool) -> None:
    """Raise LeaseDirError where another user could plant, swap or hold what is at `path`."""
    if shared:
        # a shared directory is world-writable only with the sticky bit (no one removes or
        # replaces another's files); lock files there may belong to anyone
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
            raise _refuse(path, f"it is world-writable without the sticky bit "
                                f"(mode {stat.S_IMODE(st.st_mode):o})")
        return
    if st.st_uid != os.geteuid():
        raise _refuse(path, f"it belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}), "
                            f"so another user could plant or hold lock files there")
    if st.st_mode & 0o022:
        raise _refuse(path, f"it is writable by group or others (mode "
                            f"{stat.S_IMODE(st.st_mode):o}), so another user could plant or "
                            f"swap lock files there")


def open_dir(directory: Path, shared: bool) -> int:
    """The lease directory as an open fd (made if new: 0700, or 1777 when shared), checked."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(directory, 0o700)       # mkdir never follows a link at `directory`
            created = True
        except FileExistsError:
            created = False
        # the private directory itself must not be a link; a configured one may be
        nofollow = 0 if shared else os.O_NOFOLLOW
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | nofollow)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refuse(directory, "it is a symbolic link or not a directory, and a link "
                                     "there is not followed") from None
        raise LeaseDirError(f"device leases: cannot use the lease directory {directory} "
                            f"({exc.strerror}); set {SHARED_ENV} to a writable directory, or "
                            f"pass --infer-no-leases") from None
    try:
        if created and shared:
            os.fchmod(dfd, 0o1777)           # shared by every user's sessions, like /tmp
        _check(os.fstat(dfd), directory, shared)
    except BaseException:
        os.close(dfd)
        raise
    return dfd


def _open_lock(dfd: int, path: Path, shared: bool) -> tuple[int, bool]:
    """(fd, writable) of a lock file, opened inside the directory without following a link;
    O_NONBLOCK so that a planted FIFO cannot hang the open."""
    flags = os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        try:
            fd = os.open(path.name, os.O_RDWR | os.O_CREAT | flags, 0o666 if shared else 0o600,
                         dir_fd=dfd)
            writable = True
        except PermissionError:          # another user's file in a shared directory
            fd, writable = os.open(path.name, os.O_RDONLY | flags, dir_fd=dfd), False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "the lock file is a symbolic link, and a link there is not "
                                "followed (it may point at another user's file)") from None
        raise LeaseDirError(f"device leases: cannot open the lock file {path} "
                            f"({exc.strerror}); {_FIX}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise _refuse(path, "the lock file is not a plain file with one name (a device, "
                                "FIFO or hard link planted there)")
        _check(st, path, shared)
    except BaseException:
        os.close(fd)
        raise
    return fd, writable


def _take_all(dfd: int, directory: Path, wanted, who: str, fds: list[int],
              shared: bool) -> tuple | None:
    """Lock every resource without waiting, appending each lock's fd to `fds`; the first
    that is busy, as (resource, lock file), or None when all are held."""
    for resource, exclusive in wanted:
        path = _file_for(directory, resource)
        fd, writable = _open_lock(dfd, path, shared)
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
