"""Under pytest-xdist, a test that times something runs alone; the rest share the machine.

A test module marked `pytestmark = pytest.mark.shares_host` asserts nothing another test's load
can change (parsing, rendering, conversions, errors, stores, schedules): two such tests run at
once, one per xdist worker. Every other test measures, and its assertions lean on having the
host's two cores to itself (latencies, rates, lag verdicts, detected slowdowns): it takes the
host exclusively, so neither worker starts anything beside it. The lock is a reader-writer
lock on files (flock), with a turnstile so that a waiting exclusive test is not starved by a
stream of shared ones. It wraps the whole test protocol (setup, call, teardown), so a module
fixture that starts a server does so under its first test's lock.

Shared tests are collected first (their files keep their order), so that both workers spend
the first part of the run on them together and the timing tests then run one by one. Without
xdist nothing here acts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

import pytest

MARKER = "shares_host"


def _lock_dir(config) -> Path | None:
    run = getattr(config, "workerinput", {}).get("testrunuid")
    if run is None:
        return None
    path = Path(tempfile.gettempdir(), f"inferbench-tests-{os.getuid()}-{run}")
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@contextlib.contextmanager
def _flock(path: Path, mode: int):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)            # closing releases the lock


@contextlib.contextmanager
def host_lock(directory: Path, exclusive: bool):
    """Shared or exclusive hold of the host for one test. A turnstile comes first: a writer
    holds it while it waits for the readers to leave, so later readers queue behind it."""
    turnstile, host = directory / "turnstile", directory / "host"
    with contextlib.ExitStack() as held:
        with _flock(turnstile, fcntl.LOCK_EX):
            if exclusive:
                held.enter_context(_flock(host, fcntl.LOCK_EX))
        if not exclusive:
            held.enter_context(_flock(host, fcntl.LOCK_SH))
        yield


def shares_host(item) -> bool:
    return item.get_closest_marker(MARKER) is not None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{MARKER}: asserts nothing another test's load can change; under xdist it "
        "runs beside other such tests (tests/exclusive.py), every other test runs alone")


def pytest_collection_modifyitems(session, config, items):
    """Shared tests first (a stable sort: files and tests keep their order)."""
    items.sort(key=lambda item: not shares_host(item))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    directory = _lock_dir(item.config)
    if directory is None:
        yield
        return
    with host_lock(directory, exclusive=not shares_host(item)):
        yield
