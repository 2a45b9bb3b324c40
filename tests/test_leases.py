"""Device leases are safe by default: a private per-user directory (0700) that no other user can
plant, link or hold files in, lock files never opened through a symbolic link, and a directory
shared between users only when INFERBENCH_LEASE_DIR names one. Real files, real users (root
chowns to `nobody` and a forked child becomes `nobody`)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from pytest_inferbench.schedule import leases

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to / act as nobody")


@pytest.fixture
def private(tmp_path, monkeypatch):
    """The default (unconfigured) place, moved into this test's tmp_path."""
    monkeypatch.delenv(leases.SHARED_ENV, raising=False)
    where = tmp_path / f"inferbench-leases-{os.geteuid()}"
    monkeypatch.setattr(leases, "default_dir", lambda: where)
    return where


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_default_directory_is_per_user_and_0700(private, monkeypatch):
    monkeypatch.undo()                                    # the real default first
    monkeypatch.delenv(leases.SHARED_ENV, raising=False)
    assert leases.lease_dir() == (leases.default_dir(), False)
    assert str(leases.default_dir()).endswith(f"-{os.geteuid()}")
    monkeypatch.setattr(leases, "default_dir", lambda: private)
    with leases.hold([("h/cpu", True)], who="me"):
        st = os.lstat(private)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
        assert _mode(private) == 0o700
        lock = private / "h__cpu.lock"
        assert _mode(lock) & 0o077 == 0 and os.lstat(lock).st_uid == os.geteuid()


def test_a_planted_symlink_is_refused_never_followed(private, tmp_path):
    private.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (private / "h__cpu.lock").symlink_to(victim)
    with pytest.raises(leases.LeaseDirError) as exc:
        with leases.hold([("h/cpu", True)]):
            pass
    assert str(private / "h__cpu.lock") in str(exc.value) and "symbolic link" in str(exc.value)
    assert victim.read_text() == "keep me"                # not truncated, not written
    # the default directory itself planted as a link to somewhere else
    (private / "h__cpu.lock").unlink()
    private.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    private.symlink_to(elsewhere)
    with pytest.raises(leases.LeaseDirError, match="symbolic link"):
        with leases.hold([("h/cpu", True)]):
            pass
    assert not any(elsewhere.iterdir())


@as_root
def test_a_directory_or_lock_file_of_another_user_is_refused(private):
    private.mkdir(mode=0o700)
    os.chown(private, NOBODY, NOBODY)
    with pytest.raises(leases.LeaseDirError) as exc:
        with leases.hold([("h/cpu", True)]):
            pass
    assert f"refusing {private}: it belongs to uid {NOBODY}" in str(exc.value)
    assert leases.SHARED_ENV in str(exc.value)            # says what to do instead
    os.chown(private, os.geteuid(), os.getegid())
    private.chmod(0o777)                                  # group/world-writable: refused
    with pytest.raises(leases.LeaseDirError, match=r"writable by group or others \(mode 777\)"):
        with leases.hold([("h/cpu", True)]):
            pass
    private.chmod(0o700)
    lock = private / "h__cpu.lock"
    lock.touch(mode=0o600)
    os.chown(lock, NOBODY, NOBODY)
    with pytest.raises(leases.LeaseDirError, match=f"refusing {lock}: it belongs to uid"):
        with leases.hold([("h/cpu", True)]):
            pass


def _hold_as_nobody(directory, started, done):
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    with leases.hold([("h/cpu", True)], who="nobody's session"):
        started.set()
        done.wait(20)


@pytest.fixture
def reachable():
    """A directory that user nobody can reach (pytest's tmp_path is inside a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="inferbench-lease-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@as_root
def test_a_configured_directory_is_shared_between_users(reachable, monkeypatch):
    tmp_path = reachable
    shared = tmp_path / "shared"
    monkeypatch.setenv(leases.SHARED_ENV, str(shared))
    assert leases.lease_dir() == (shared, True)
    ctx = multiprocessing.get_context("fork")
    started, done = ctx.Event(), ctx.Event()
    with leases.hold([("h/gpu", True)]):                  # made sticky and world-writable
        assert _mode(shared) == 0o1777
    other = ctx.Process(target=_hold_as_nobody, args=(shared, started, done))
    other.start()
    try:
        assert started.wait(20)
        lock = shared / "h__cpu.lock"
        assert os.lstat(lock).st_uid == NOBODY            # another user's lock file: used
        with pytest.raises(leases.LeaseTimeout, match=r"pid \d+ \(nobody's session"):
            with leases.hold([("h/cpu", False)], timeout_s=0.2):
                pass
    finally:
        done.set()
        other.join(10)
    with leases.hold([("h/cpu", True)], timeout_s=5) as info:   # free again
        assert info["wait_s"] < 5
    # links are still not followed in a shared directory
    (shared / "h__cpu.lock").unlink()
    (shared / "h__cpu.lock").symlink_to(tmp_path / "victim")
    with pytest.raises(leases.LeaseDirError, match="symbolic link"):
        with leases.hold([("h/cpu", True)]):
            pass
    assert not (tmp_path / "victim").exists()
