"""Two-tier placement, as a pure decision over (slots, pending tasks, committed tasks).

Tier 1 (host): a task goes only to a slot able to run it (device kind present, the task's
placement labels among the host's labels, its runtime installed where the follower said which
it has); among able hosts, the one with the least estimated remaining work per slot.
Tier 2 (device): every task holds resources while it runs, each exclusively or shared:

    CPU task                      host/cpu   exclusive (shared with colocate: true)
    GPU task on cuda:N            host/cuda:N exclusive (shared with colocate: true)
                                  host/cpu   shared
    any other test (no benchmark) host/cpu   shared

so a device runs one benchmark at a time, a CPU benchmark has its host's CPUs to itself (no
GPU benchmark beside it either), and co-location happens only between tasks that both ask
for it. The same table is what the workers' device leases (leases.py) enforce.
Order: shortest estimated task first, with aging (priority = estimate - aging x waited), so a
long task's priority keeps rising; the order is static in time, so the queue is sorted once.
Work-conserving: a free slot gets a task whenever some pending task is able there and
conflict-free. A task blocked by clashes for reserve_after_s reserves one able host (the
least loaded): nothing new that clashes with it starts there, the host drains, it runs (so a
CPU benchmark on a host whose GPUs never go idle does not starve either).

Nothing here imports pytest or the rest of the plugin: the simulator runs it unchanged.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping, Sequence

CPU = "cpu"


@dataclass(frozen=True, eq=False)
class Slot:
    """One worker: runs one task at a time. devices None: any device (plain `-n N`)."""
    id: str
    host: str
    devices: frozenset | None = None
    labels: Mapping[str, str] | None = None   # None: no inventory (plain -n N), any labels
    runtimes: frozenset | None = None         # None: not reported, assume any


@dataclass(frozen=True, eq=False)
class Task:
    key: Hashable
    device: str = CPU                         # cpu | cuda | cuda:N | "" (not a benchmark)
    labels: Mapping[str, str] = field(default_factory=dict)
    colocate: bool = False
    runtime: str | None = None
    estimate_s: float = 1.0
    ready_s: float = 0.0


def able(task: Task, slot: Slot) -> bool:
    """Tier 1: can this slot's host run the task at all?"""
    if slot.labels is not None:
        for k, v in task.labels.items():
            if slot.labels.get(k) != v:
                return False
    if task.runtime and slot.runtimes is not None and task.runtime not in slot.runtimes:
        return False
    if not task.device or slot.devices is None:
        return True
    if task.device == "cuda":
        return any(d.startswith("cuda") for d in slot.devices)
    return task.device in slot.devices


def device_on(task: Task, slot: Slot) -> str:
    """The device the task uses on this slot (cuda -> the slot's first GPU, else cuda:0)."""
    if task.device == "cuda":
        gpus = sorted(d for d in (slot.devices or ()) if d.startswith("cuda:"))
        return gpus[0] if gpus else "cuda:0"
    return task.device


def resources(task: Task, slot: Slot) -> list[tuple[str, bool]]:
    """Tier 2: (resource, exclusive) pairs the task holds while it runs on the slot; the
    resource names are "<host>/cpu", "<host>/cuda:N" (also the lease file names)."""
    host = slot.host
    if not task.device:
        return [(f"{host}/{CPU}", False)]
    if task.device == CPU:
        return [(f"{host}/{CPU}", not task.colocate)]
    return [(f"{host}/{CPU}", False), (f"{host}/{device_on(task, slot)}", not task.colocate)]


class Holders:
    """Who holds which resource, by slot: exclusive holders and shared holders."""

    def __init__(self):
        self.ex: dict[str, set] = {}
        self.sh: dict[str, set] = {}

    def add(self, slot_id, res: Iterable[tuple[str, bool]]) -> None:
        for r, exclusive in res:
            (self.ex if exclusive else self.sh).setdefault(r, set()).add(slot_id)

    def conflicts(self, slot_id, res: Iterable[tuple[str, bool]]) -> bool:
        """True when another slot holds a resource the task needs in a clashing mode (a
        slot's own tasks run one after the other, so they never clash with each other)."""
        for r, exclusive in res:
            held = self.ex.get(r)
            if held and (len(held) > 1 or slot_id not in held):
                return True
            if exclusive:
                held = self.sh.get(r)
                if held and (len(held) > 1 or slot_id not in held):
                    return True
        return False


def shape(task: Task) -> tuple:
    """What placement depends on: tasks of one shape are able and clash on the same slots."""
    return (task.device, tuple(sorted(task.labels.items())), task.colocate, task.runtime)


class ReadyQueue:
    """Pending tasks in priority order: estimate - aging x (now - ready), i.e. sorted by
    estimate + aging x ready (a static key), ties in arrival order. Kept per shape too, so a
    decision skips every task of a shape that fits nowhere in one step."""

    def __init__(self, aging: float = 0.5, fifo: bool = False):
        self.aging = aging
        self.fifo = fifo                  # first come, first served (a baseline)
        self._keys: list[tuple[float, int]] = []
        self._tasks: dict[tuple[float, int], Task] = {}
        self._where: dict[Hashable, tuple[float, int]] = {}
        self._shapes: dict[tuple, list[tuple[float, int]]] = {}
        self._seq = itertools.count()

    def add(self, task: Task) -> None:
        k = (task.ready_s if self.fifo else task.estimate_s + self.aging * task.ready_s,
             next(self._seq))
        bisect.insort(self._keys, k)
        bisect.insort(self._shapes.setdefault(shape(task), []), k)
        self._tasks[k] = task
        self._where[task.key] = k

    def remove(self, task: Task) -> None:
        k = self._where.pop(task.key)
        t = self._tasks.pop(k)
        del self._keys[bisect.bisect_left(self._keys, k)]
        keys = self._shapes[shape(t)]
        del keys[bisect.bisect_left(keys, k)]
        if not keys:
            del self._shapes[shape(t)]

    def __iter__(self):
        return (self._tasks[k] for k in self._keys)   # do not add/remove while iterating

    def __len__(self):
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return key in self._where

    def walk(self) -> "_Walk":
        return _Walk(self._tasks, [(keys, shp) for shp, keys in self._shapes.items()])


class _Walk:
    """Tasks in priority order, merged over shapes; drop() skips the rest of the last task's
    shape (it fits nowhere now, and a decision only ever takes slots and adds holders)."""

    def __init__(self, tasks: dict, lists):
        self._tasks = tasks
        self._heap = [(keys[0], i, 0) for i, (keys, _) in enumerate(lists) if keys]
        self._lists = lists
        heapq.heapify(self._heap)
        self._last = None
        self._dropped = set()

    def __iter__(self):
        while self._heap:
            key, i, pos = heapq.heappop(self._heap)
            if i in self._dropped:
                continue
            keys = self._lists[i][0]
            if pos + 1 < len(keys):
                heapq.heappush(self._heap, (keys[pos + 1], i, pos + 1))
            self._last = i
            yield self._tasks[key]

    def drop(self) -> None:
        self._dropped.add(self._last)


class TwoTier:
    """decide(): which pending tasks start on which slots now.

    committed: the tasks each slot has been given and not finished (running first).
    capacity: how many tasks a slot may hold at once (1 where the caller starts tasks itself;
    xdist needs 2: a worker starts an item only once it knows the next one).
    closed: slots that get nothing more (shutting down).
    lookahead: slots that must get a next task if any pending task is able there, even one
    that clashes with other slots (the workers' leases then make it wait its turn); tasks
    that need only what the slot already holds come first.
    now: seconds on the tasks' ready_s clock. A task blocked by clashes for reserve_after_s
    or longer reserves what it needs on one able host: no new task that clashes with it
    starts there, so the host drains and it runs (a CPU benchmark on a host whose GPUs stay
    busy would otherwise wait for ever).
    pending: a ReadyQueue (its priority order), or any iterable (shortest estimate first).
    consider: only these slots may get a task (the caller knows only their hosts changed
    since the last decision, and no task was added): the same answer, found faster (plus the
    hosts a reservation was lifted from since, which are decided again at the next call).
    """

    def __init__(self, slots: Sequence[Slot], aging: float = 0.5,
                 reserve_after_s: float = 120.0):
        self.slots = {s.id: s for s in slots}
        self.aging = aging
        self.reserve_after_s = reserve_after_s
        self._res_cache: dict = {}
        self._able_cache: dict = {}
        self._reservations: dict = {}     # task key -> (slot, resources) it waits for
        self._revisit: set = set()        # hosts whose reservation ended: decide them again
        self._per_host: dict[str, int] = {}
        for s in slots:
            self._per_host[s.host] = self._per_host.get(s.host, 0) + 1

    def _res(self, task: Task, slot: Slot) -> list[tuple[str, bool]]:
        key = (shape(task), slot.id)
        res = self._res_cache.get(key)
        if res is None:
            res = self._res_cache[key] = resources(task, slot)
        return res

    def _able(self, task: Task, slot: Slot) -> bool:
        key = (shape(task), slot.id)
        ok = self._able_cache.get(key)
        if ok is None:
            ok = self._able_cache[key] = able(task, slot)
        return ok

    def add_slot(self, slot: Slot) -> None:
        self._res_cache.clear()
        self._able_cache.clear()
        self.slots[slot.id] = slot
        self._per_host[slot.host] = self._per_host.get(slot.host, 0) + 1

    def remove_slot(self, slot_id) -> None:
        slot = self.slots.pop(slot_id, None)
        if slot is not None:
            self._per_host[slot.host] -= 1

    def decide(self, pending, committed: Mapping[str, Sequence[Task]],
               capacity: int = 1, lookahead: Iterable[str] = (),
               closed: Iterable[str] = (), now: float = 0.0,
               consider: Iterable[str] | None = None) -> list[tuple[Task, str]]:
        if not isinstance(pending, ReadyQueue):
            queue = ReadyQueue(aging=0.0)
            for t in sorted(pending, key=lambda t: t.estimate_s):   # shortest first
                queue.add(t)
            pending = queue
        self._drop_stale_reservations(pending)
        consider = self._widen(consider)
        hosts = {self.slots[s].host for s in consider if s in self.slots} \
            if consider is not None else None
        closed = set(closed)
        r = _Round(capacity, now)
        self._load_committed(r, committed, hosts)
        r.free = {sid: n for sid in
                  (self.slots if consider is None else sorted(consider & self.slots.keys()))
                  if sid not in closed and (n := capacity - len(committed.get(sid, ()))) > 0}
        for key, (slot, res) in self._reservations.items():
            r.reserved.add(key, res)
            r.reserved_hosts.add(slot.host)
        walk = pending.walk()
        for task in walk if r.free else ():
            best, blocked = self._best_slot(task, r)
            if best is None:
                if task.key in self._reservations:
                    continue                     # it waits for its reserved host to drain
                if not self._reserve(task, blocked, r):
                    walk.drop()
                continue
            self._assign(task, best, r)
            if not r.free:
                break
        self._look_ahead(pending, committed, lookahead, closed, r)
        return r.out

    def _drop_stale_reservations(self, pending) -> None:
        for key, (slot, _) in list(self._reservations.items()):
            if key not in pending:               # taken away by the caller: free its host
                del self._reservations[key]
                self._revisit.add(slot.host)

    def _widen(self, consider: Iterable[str] | None) -> set | None:
        """The slots to decide for: those given, and every slot of a host to revisit."""
        consider = set(consider) if consider is not None else None
        if consider is not None and self._revisit:
            consider |= {sid for sid, s in self.slots.items() if s.host in self._revisit}
        self._revisit.clear()
        return consider

    def _load_committed(self, r: "_Round", committed, hosts: set | None) -> None:
        """What the running tasks hold, and each host's estimated remaining work."""
        for sid, tasks in committed.items():
            slot = self.slots.get(sid)
            if slot is None or (hosts is not None and slot.host not in hosts):
                continue
            for t in tasks:
                r.holders.add(sid, self._res(t, slot))
                r.work[slot.host] = r.work.get(slot.host, 0.0) + t.estimate_s

    def _best_slot(self, task: Task, r: "_Round") -> tuple[str | None, Slot | None]:
        """Tier 1 then 2: the free able slot without a clash on the least loaded host (then
        with fewer tasks); else None and the clashing able host that drains first."""
        best, best_load, blocked, blocked_load = None, None, None, None
        for sid in r.free:
            slot = self.slots[sid]
            if not self._able(task, slot):
                continue
            res = self._res(task, slot)
            load = r.work.get(slot.host, 0.0) / self._per_host[slot.host]
            if r.holders.conflicts(sid, res) or r.reserved.conflicts(task.key, res):
                if blocked is None or load < blocked_load:
                    blocked, blocked_load = slot, load     # the host that drains first
                continue
            load = (load, r.capacity - r.free[sid])     # then the slot with fewer tasks
            if best is None or load < best_load:
                best, best_load = sid, load
        return best, blocked

    def _reserve(self, task: Task, blocked: Slot | None, r: "_Round") -> bool:
        """A task blocked long enough keeps what it needs on that host from new tasks until
        it starts there, so the host drains (no starvation). False: not (yet) reserved."""
        if blocked is None or r.now - task.ready_s < self.reserve_after_s \
                or blocked.host in r.reserved_hosts:
            return False
        res = self._res(task, blocked)
        self._reservations[task.key] = (blocked, res)
        r.reserved.add(task.key, res)
        r.reserved_hosts.add(blocked.host)
        return True

    def _assign(self, task: Task, best: str, r: "_Round") -> None:
        slot = self.slots[best]
        r.out.append((task, best))
        r.taken.add(task.key)
        gone = self._reservations.pop(task.key, None)
        if gone is not None and gone[0].host != slot.host:
            self._revisit.add(gone[0].host)  # it started elsewhere: that host is free
        r.holders.add(best, self._res(task, slot))
        r.work[slot.host] = r.work.get(slot.host, 0.0) + task.estimate_s
        r.free[best] -= 1
        if not r.free[best]:
            del r.free[best]

    def _look_ahead(self, pending, committed, lookahead: Iterable[str], closed: set,
                    r: "_Round") -> None:
        """A busy slot asking for its next task gets one: preferably one whose resources its
        running tasks already hold, then one without a clash, else any able one."""
        got = {sid for _, sid in r.out}
        for sid in lookahead:
            if sid in got or sid not in self.slots or sid in closed \
                    or len(committed.get(sid, ())) >= r.capacity:
                continue
            slot = self.slots[sid]
            own = {res for t in committed.get(sid, ()) for res, _ in self._res(t, slot)}
            best, best_rank = None, None
            for task in pending:
                if task.key in r.taken or not able(task, slot):
                    continue
                res = self._res(task, slot)
                rank = 0 if {x for x, _ in res} <= own else \
                    1 if not r.holders.conflicts(sid, res) else 2
                if best is None or rank < best_rank:
                    best, best_rank = task, rank
                    if rank == 0:
                        break
            if best is not None:
                r.out.append((best, sid))
                r.taken.add(best.key)
                r.holders.add(sid, self._res(best, slot))


@dataclass
class _Round:
    """One decide() call's working state."""
    capacity: int
    now: float
    holders: Holders = field(default_factory=Holders)
    work: dict = field(default_factory=dict)            # host -> estimated remaining work
    free: dict = field(default_factory=dict)            # slot -> tasks it can still take
    out: list = field(default_factory=list)
    taken: set = field(default_factory=set)
    reserved: Holders = field(default_factory=Holders)
    reserved_hosts: set = field(default_factory=set)


class Retries:
    """A crashed task is re-queued once (on another able slot); a second crash fails it."""

    def __init__(self, limit: int = 1):
        self.limit = limit
        self.crashes: dict[Hashable, int] = {}

    def crashed(self, key) -> bool:
        """Record a crash; True when the task should be queued again."""
        self.crashes[key] = self.crashes.get(key, 0) + 1
        return self.crashes[key] <= self.limit


def estimate_s(warmup, min_duration: float, max_duration: float, min_queries: int,
               history_s: float | None = None, converts: bool = True) -> float:
    """Seconds a cell is expected to take: an earlier run's wall time where there is one,
    else warm-up + max(min_duration, min_queries x 2 ms), capped at max_duration, plus a guess
    for loading/converting the model."""
    load = 2.0 if converts else 0.5
    if history_s is not None and history_s > 0:
        return float(history_s) + load
    warm = float(warmup) if isinstance(warmup, float) else 0.005 * int(warmup)
    measure = min(max(min_duration, 0.002 * min_queries), max_duration)
    return warm + measure + load
