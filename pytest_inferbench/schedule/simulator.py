"""A discrete-event simulator of a fleet running a benchmark session, with a simulated clock.

Three ways to run the same synthetic trace:
- "two-tier": policy.TwoTier unchanged (shortest estimate first with aging, able hosts only,
  least-loaded host, one benchmark per device, a CPU benchmark alone on its host's CPUs).
- "fifo": the same exclusivity and placement, first come first served.
- "load" (and "worksteal", xdist's `--dist worksteal`): what plain pytest-xdist does: one worker per slot, items dealt in
  chunks in collection order (LoadScheduling's watermarks), no notion of devices, labels or
  exclusivity. A worker runs its items on the device it was pinned to; two items that share
  a GPU, or a CPU item beside any other item on its host, slow each other down (each by
  `slowdown` per co-runner: the measured +40..107%).

Reported: average job completion time (all items submitted at t=0, as a pytest session
does), makespan, co-located pairs (items that overlapped on a shared device or on the host's
CPUs without asking), misplaced items (ran on a host without the labels they need), and the
time spent in placement decisions (wall clock, the real cost of running the policy).
"""

from __future__ import annotations

import heapq
import random
import time
from dataclasses import dataclass

from .policy import ReadyQueue, Slot, Task, TwoTier, resources


@dataclass(frozen=True)
class Item:
    key: int
    device: str                 # cpu | cuda
    labels: tuple               # ((k, v), ...)
    duration_s: float           # alone on its device
    estimate_s: float           # what the scheduler believes


def fleet(hosts: int, gpus: int) -> list[Slot]:
    """Per host: a CPU slot and one slot per GPU; half the hosts labelled gpu=h200."""
    slots = []
    for h in range(hosts):
        labels = {"gpu": "h200" if h % 2 == 0 else "a100"}
        slots.append(Slot(f"h{h}/cpu", f"h{h}", frozenset({"cpu"}), labels))
        for g in range(gpus):
            slots.append(Slot(f"h{h}/cuda:{g}", f"h{h}", frozenset({f"cuda:{g}"}), labels))
    return slots


def trace(n: int, seed: int = 0, cpu_share: float = 0.2, labelled_share: float = 0.1,
          median_s: float = 10.0, sigma: float = 1.0, estimate_noise: float = 0.3) -> list[Item]:
    """n items: lognormal durations (heavy-tailed, like a sweep over batch sizes and models);
    estimates off by a lognormal factor; a share of GPU items needs gpu=h200 hosts."""
    rng = random.Random(seed)
    items = []
    for k in range(n):
        is_cpu = rng.random() < cpu_share
        labels = (("gpu", "h200"),) if not is_cpu and rng.random() < labelled_share else ()
        d = median_s * rng.lognormvariate(0.0, sigma)
        est = d * rng.lognormvariate(0.0, estimate_noise)
        items.append(Item(k, "cpu" if is_cpu else "cuda", labels, d, est))
    return items


@dataclass
class Outcome:
    policy: str
    avg_completion_s: float
    makespan_s: float
    colocated_pairs: int
    misplaced: int
    decision_s: float
    decisions: int


def _task(item: Item) -> Task:
    return Task(key=item.key, device=item.device, labels=dict(item.labels),
                estimate_s=item.estimate_s, ready_s=0.0)


def _pairs(runs) -> int:
    """Pairs of runs that overlapped in time on one host and shared a resource (same device,
    or a CPU item beside anything)."""
    by_host: dict[str, list] = {}
    for host, dev, start, end in runs:
        by_host.setdefault(host, []).append((start, end, dev))
    count = 0
    for rows in by_host.values():
        rows.sort()
        active: list = []
        for start, end, dev in rows:
            active = [(e, d) for e, d in active if e > start + 1e-9]
            count += sum(1 for _, d in active if d == dev or "cpu" in (d, dev))
            active.append((end, dev))
    return count


def simulate_policy(slots: list[Slot], items: list[Item], fifo: bool = False,
                    aging: float = 0.5, reserve_after_s: float = 120.0) -> Outcome:
    """Two-tier (or FIFO with the same exclusivity): policy.TwoTier decides, the simulator
    starts what it decides and finishes each item after its duration."""
    policy = TwoTier(slots, aging=aging, reserve_after_s=reserve_after_s)
    by_id = {s.id: s for s in slots}
    queue = ReadyQueue(aging=aging, fifo=fifo)
    tasks = {it.key: _task(it) for it in items}
    for it in items:
        queue.add(tasks[it.key])
    duration = {it.key: it.duration_s for it in items}
    committed: dict[str, list[Task]] = {}
    on_host: dict[str, list[str]] = {}
    for s in slots:
        on_host.setdefault(s.host, []).append(s.id)
    consider = None                                     # the first decision: every slot
    events: list = []
    now, done, total, spent, calls = 0.0, 0, 0.0, 0.0, 0
    runs = []
    while True:
        started = time.perf_counter()
        decisions = policy.decide(queue, committed, capacity=1, now=now, consider=consider)
        spent += time.perf_counter() - started
        calls += 1
        for task, sid in decisions:
            queue.remove(task)
            committed[sid] = [task]
            end = now + duration[task.key]
            heapq.heappush(events, (end, task.key, sid))
            slot = by_id[sid]
            runs.append((slot.host, _dev(task, slot), now, end))
        if not events:
            break
        now, key, sid = heapq.heappop(events)
        ended = [sid]
        while events and events[0][0] <= now:           # items that end at the same time
            ended.append(heapq.heappop(events)[2])
        consider = set()
        for sid in ended:
            del committed[sid]
            done += 1
            total += now
            consider.update(on_host[by_id[sid].host])     # only that host's slots changed
    if len(queue):
        raise RuntimeError(f"{len(queue)} items could not be placed anywhere")
    return Outcome("fifo" if fifo else "two-tier", total / done, now, _pairs(runs), 0, spent,
                   calls)


def _dev(task: Task, slot: Slot) -> str:
    res = resources(task, slot)
    return res[-1][0].split("/", 1)[1]


def simulate_load(slots: list[Slot], items: list[Item], slowdown: float = 0.7,
                  steal: bool = False) -> Outcome:
    """pytest-xdist `--dist load`: workers = slots, items dealt in chunks in collection order,
    each worker runs its queue one item after another on its pinned device (the CPU slot's
    GPU items on cuda:0); co-running items that share a resource slow each other down.
    steal: `--dist worksteal` instead (WorkStealingScheduling): the items split evenly into
    contiguous blocks up front, and a worker that runs dry steals half of the largest
    remaining queue (from its end)."""
    return _XdistLoad(slots, items, slowdown, steal).run()


class _XdistLoad:
    """simulate_load's state: each worker's queue, what runs where, at which rate."""

    def __init__(self, slots: list[Slot], items: list[Item], slowdown: float, steal: bool):
        self.workers = list(slots)
        self.slowdown, self.steal = slowdown, steal
        self.pending = list(items)
        self.queues: dict[str, list[Item]] = {w.id: [] for w in self.workers}
        self._deal()
        self.gpus_of = {w.host: sorted(d for s in self.workers if s.host == w.host
                                       for d in s.devices if d != "cpu")
                        for w in self.workers}
        self.running: dict[str, list] = {}   # worker -> [item, device, work left, start, host]
        self.rates: dict[str, float] = {}
        self.on_host: dict[str, set] = {}
        self.now, self.total, self.done = 0.0, 0.0, 0
        self.runs, self.misplaced = [], 0

    def _deal(self) -> None:
        """The first chunks (worksteal: every item, in even contiguous blocks, first)."""
        n, pending = len(self.workers), self.pending
        if self.steal:
            per, extra = divmod(len(pending), n)
            for i, w in enumerate(self.workers):
                take = per + (1 if i < extra else 0)
                self.queues[w.id].extend(pending[:take])
                del pending[:take]
        chunk = max(2, len(pending) // n // 4)
        for w in self.workers:
            self.queues[w.id].extend(pending[:chunk])
            del pending[:chunk]

    def device(self, item: Item, w: Slot) -> str:
        if item.device == "cpu":
            return "cpu"
        pinned = next(iter(w.devices))
        return pinned if pinned != "cpu" else (self.gpus_of[w.host] or ["cuda:0"])[0]

    def refill(self, wid: str) -> None:
        q, pending = self.queues[wid], self.pending
        if self.steal:
            if not q:
                victim = max(self.queues.values(), key=len)
                if len(victim) > 1:
                    half = len(victim) // 2
                    q.extend(victim[-half:])
                    del victim[-half:]
            return
        n = len(self.workers)
        low, high = max(2, len(pending) // n // 4), max(2, len(pending) // n // 2)
        if pending and len(q) < low:
            take = high - len(q)
            q.extend(pending[:take])
            del pending[:take]

    def launch(self, w: Slot) -> None:
        q = self.queues[w.id]
        self.refill(w.id)
        if not q:
            return
        item = q.pop(0)
        if item.labels and any(w.labels.get(k) != v for k, v in item.labels):
            self.misplaced += 1
        self.running[w.id] = [item, self.device(item, w), item.duration_s, self.now, w.host]
        self.on_host.setdefault(w.host, set()).add(w.id)

    def rerate(self, host: str) -> None:
        """Co-running items that share a resource slow each other down."""
        ids = self.on_host.get(host, ())
        for wid in ids:
            dev = self.running[wid][1]
            others = sum(1 for o in ids if o != wid and (self.running[o][1] == dev
                                                         or "cpu" in (self.running[o][1], dev)))
            self.rates[wid] = 1.0 / (1.0 + self.slowdown * others)

    def run(self) -> Outcome:
        slot_of = {w.id: w for w in self.workers}
        for w in self.workers:
            self.launch(w)
        for host in self.on_host:
            self.rerate(host)
        while self.running:
            for host in self._advance(slot_of):
                self.rerate(host)
        return Outcome("worksteal" if self.steal else "load", self.total / self.done, self.now,
                       _pairs(self.runs), self.misplaced, 0.0, 0)

    def _advance(self, slot_of: dict) -> set:
        """To the next finish: the finished items' workers start their next; the hosts
        touched."""
        running, rates = self.running, self.rates
        wid = min(running, key=lambda w: running[w][2] / rates[w])
        dt = running[wid][2] / rates[wid]
        self.now += dt
        for w2, row in running.items():
            row[2] -= dt * rates[w2]
        finished = [w2 for w2, row in running.items() if row[2] <= 1e-9]
        touched = set()
        for w2 in finished:
            item, dev, _, st, host = running.pop(w2)
            self.on_host[host].discard(w2)
            rates.pop(w2, None)
            self.runs.append((host, dev, st, self.now))
            self.total += self.now
            self.done += 1
            self.launch(slot_of[w2])
            touched.add(host)
        return touched


def compare(hosts: int, gpus: int, n_items: int, seed: int = 0) -> list[Outcome]:
    slots = fleet(hosts, gpus)
    items = trace(n_items, seed)
    out = [simulate_policy(slots, items), simulate_policy(slots, items, fifo=True)]
    if n_items * len(slots) <= 6_000_000:          # the load model is O(running) per event
        out.append(simulate_load(slots, items))
        out.append(simulate_load(slots, items, steal=True))
    return out

