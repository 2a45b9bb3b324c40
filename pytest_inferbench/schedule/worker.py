"""The worker's side of placement: where am I (INFERBENCH_SLOT), the device leases around a
cell's run, the result's `placement`; and, on the controller, which results overlapped."""

from __future__ import annotations

import os
from contextlib import contextmanager

from ..spec.followers import LABELS_ENV, SLOT_ENV
from .leases import DEFAULT_TIMEOUT_S, hold
from .policy import Slot, Task, device_on, resources


def slot_here() -> tuple[str, str | None]:
    """(follower host, its device) of this worker; ("local", None) outside a follower."""
    name = os.environ.get(SLOT_ENV)
    if not name:
        return "local", None
    host, _, device = name.partition("/")
    return host, device or None


def misplaced(cell) -> str | None:
    """On a follower's worker: why this cell should not run here (no follower had what it
    needs, so the scheduler sent it somewhere only to report it), else None."""
    if not os.environ.get(SLOT_ENV):
        return None                      # plain -n N or no xdist: one host, no inventory
    host, device = slot_here()
    have = dict(kv.split("=", 1) for kv in os.environ.get(LABELS_ENV, "").split(",") if kv)
    placement = cell.placement
    want = dict(placement.labels) if placement else {}
    if any(have.get(k) != v for k, v in want.items()):
        return (f"placement: no follower has the labels {want} (follower {host} has "
                f"{have or 'none'})")
    if device and not (cell.device == device or (cell.device == "cuda"
                                                 and device.startswith("cuda:"))):
        return f"placement: no follower lists device {cell.device} (this slot is {host}/{device})"
    return None


def task_of(cell, key: str = "") -> Task:
    placement = cell.placement
    return Task(key=key, device=cell.device, colocate=bool(placement and placement.colocate),
                labels=dict(placement.labels) if placement else {})


def _slot() -> Slot:
    host, device = slot_here()
    return Slot(id=os.environ.get("PYTEST_XDIST_WORKER", "main"), host=host,
                devices=frozenset({device}) if device else None)


def run_device(cell) -> str:
    """The device name to run the cell with here: a follower's GPU slot sees its one GPU as
    cuda:0 (CUDA_VISIBLE_DEVICES), whatever its number on the host."""
    _, device = slot_here()
    if device and device.startswith("cuda") and cell.device.startswith("cuda"):
        return "cuda:0"
    return cell.device


def placement_here(cell) -> dict:
    host, _ = slot_here()
    slot = _slot()
    return {"follower": host, "slot": slot.id, "device": device_on(task_of(cell), slot)}


@contextmanager
def lease_for(cell, who: str, enabled: bool = True, timeout_s: float | None = None):
    """Hold the cell's resources (policy.resources) for the with-block; yields the lease
    info (wait_s). Not enabled: yields without locking."""
    if not enabled:
        yield {"wait_s": 0.0, "resources": []}
        return
    res = resources(task_of(cell, who), _slot())
    with hold(res, who=who, timeout_s=timeout_s or DEFAULT_TIMEOUT_S) as info:
        yield info


def _overlap(a: dict, b: dict) -> bool:
    wa, wb = a.get("window") or {}, b.get("window") or {}
    if not all(isinstance(w.get(k), (int, float)) for w in (wa, wb) for k in ("start", "end")):
        return False
    return wa["start"] < wb["end"] and wb["start"] < wa["end"]


def _shares(pa: dict, pb: dict) -> bool:
    if pa.get("follower") != pb.get("follower"):
        return False
    da, db = pa.get("device"), pb.get("device")
    return da == db or "cpu" in (da, db)


def link_colocated(new: dict, earlier: list[dict]) -> None:
    """Controller: record in both results which measured windows overlapped on one follower
    (same device, or a CPU cell beside anything), in placement.colocated_with."""
    p = new.get("placement")
    if not isinstance(p, dict):
        return
    p.setdefault("colocated_with", [])
    for other in earlier:
        q = other.get("placement")
        if not isinstance(q, dict) or other is new or not _shares(p, q) or \
                not _overlap(new, other):
            continue
        p["colocated_with"].append(other.get("id"))
        q.setdefault("colocated_with", []).append(new.get("id"))


def summary_line(sched, results) -> str:
    """One line for the terminal summary about how the two-tier scheduler placed the cells."""
    placed = [r.placement for r in results if r.placement is not None]    # typed Results
    hosts = sorted({p.follower for p in placed} - {None})
    waits = sum(float(p.lease_wait_s or 0) for p in placed)
    pairs = sum(len(p.colocated_with) for p in placed) // 2
    info = sched.summary()
    return (f"two-tier scheduler: {info['workers']} worker(s) on "
            f"{', '.join(hosts or info['hosts'])}; one benchmark at a time per device, and a "
            f"CPU benchmark has its host's CPUs to itself, so CPU cells on one host ran one "
            f"after another (placement: colocate: true allows sharing); co-located pairs: "
            f"{pairs}; lease waits {waits:.1f}s; {info['decisions']} decisions in "
            f"{info['decision_s'] * 1e3:.1f} ms")
