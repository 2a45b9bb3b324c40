"""The tests' own reader-writer lock (tests/exclusive.py): a timing test holds the host alone,
and one that waits for it is not overtaken by shared tests that arrive after it."""

import multiprocessing
import time

import pytest

from exclusive import host_lock

pytestmark = pytest.mark.shares_host   # its holds are 0.3-0.6 s apart: load cannot reorder them


def _hold(directory, exclusive, seconds, log):
    with host_lock(directory, exclusive):
        log.put(("in", "ex" if exclusive else "sh", time.monotonic()))
        time.sleep(seconds)
        log.put(("out", "ex" if exclusive else "sh", time.monotonic()))


def _run(tmp_path, plan):
    """plan: (start delay s, exclusive, hold s) per process; returns the enter/leave events
    in time order."""
    ctx = multiprocessing.get_context("fork")
    log = ctx.Queue()
    procs = []
    for delay, exclusive, seconds in plan:
        p = ctx.Process(target=_hold, args=(tmp_path, exclusive, seconds, log))
        p.start()
        procs.append(p)
        time.sleep(delay)
    for p in procs:
        p.join(10)
    events = [log.get(timeout=1) for _ in range(2 * len(plan))]
    return sorted(events, key=lambda e: e[2])


def test_two_shared_holds_overlap(tmp_path):
    events = _run(tmp_path, [(0.1, False, 0.6), (0, False, 0.6)])
    assert [e[0] for e in events] == ["in", "in", "out", "out"]


def test_an_exclusive_hold_is_alone_and_not_overtaken(tmp_path):
    # a shared hold, then a writer that must wait for it, then a reader that arrives while the
    # writer waits: the reader goes after the writer
    events = _run(tmp_path, [(0.2, False, 0.6), (0.2, True, 0.4), (0, False, 0.2)])
    order = [(e[0], e[1]) for e in events]
    assert order == [("in", "sh"), ("out", "sh"), ("in", "ex"), ("out", "ex"),
                     ("in", "sh"), ("out", "sh")], events
