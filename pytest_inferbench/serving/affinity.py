"""Disjoint CPU sets for a launched server and the load generator on the same host.

On a small host the server's threads and helper processes, and the generator's issuing and
client work, would otherwise compete for the same cores, and the generator's lag would
become part of the server's latency. The server (and every process it starts) gets all
cores but the first; the pytest process, which issues and receives the requests, gets the
first. On a one-core host nothing is pinned, and the result says so.
"""

from __future__ import annotations

import os
from contextlib import contextmanager


def available() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def split() -> dict | None:
    """{"client": [...], "server": [...]} or None when the host has a single core."""
    cpus = available()
    if len(cpus) < 2 or not hasattr(os, "sched_setaffinity"):
        return None
    return {"client": cpus[:1], "server": cpus[1:]}


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


@contextmanager
def pinned(cpus: list[int] | None):
    """Pin every thread of this process to `cpus` for the block (threads started inside it
    inherit the set); restore each thread's own set afterwards."""
    if not cpus:
        yield
        return
    before = {}
    for tid in _threads():
        try:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
        except OSError:          # a thread that ended meanwhile
            pass
    try:
        yield
    finally:
        for tid, mask in before.items():
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:
                pass
