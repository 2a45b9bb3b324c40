"""The two-tier scheduler behind pytest-xdist's scheduler interface (see xdist/scheduler/
load.py for the contract: add_node, add_node_collection, schedule, mark_test_complete,
mark_test_pending, remove_node, nodes, collection_is_completed, tests_finished, has_pending).

xdist's mechanics this relies on (checked in xdist 3.8's source):
- The controller sees node ids only. Each id is resolved here to its Cell with the spec loader
  (spec file = the id's path part, relative to rootdir), hence to a policy Task (device,
  placement labels, colocate, runtime, estimated seconds). An id that is no cell (a plain
  test) is a Task without a device: it only shares the host's CPUs.
- A worker starts an item only once it has received the next one or a shutdown (remote.py's
  run_one_test reads the next index first, for teardown's `nextitem`). So "one item, wait for
  it, then the next" would hang: a node holds at most two items, the running one and the next;
  the next is chosen by the policy when the node has one left (tasks needing only what the
  node already holds first), and the device leases taken in the worker around each cell
  (leases.py) make a next item that clashes with another node wait its turn there.
- remove_node hands back the item that was running when a node crashed; the plugin's
  pytest_handlecrashitem asks `retry(nodeid)` and re-queues it once (on another able node
  where there is one), else the crash report fails it. xdist then starts a replacement from
  the same --tx spec; when the follower itself is gone that start fails (wrapped here, see
  _wrap_clone_node), and items no remaining node can run are reported failed.
- Followers report what they really have before their workers start (facts.py, via the
  plugin's pytest_configure_node): a slot is narrowed to those facts (slot_of), and an item
  that only the inventory, not the facts, would place is reported skipped from here with
  the reason (report), never silently kept queued.
- Workers that are not plain `popen` get the command line's paths relative to rootdir
  (args_relative_to_rootdir): a follower's `chdir` is its copy of the rootdir.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from xdist.report import report_collection_diff
from xdist.workermanage import parse_tx_spec_config

from ..spec import load_spec
from ..spec.followers import SLOT_ENV
from .policy import ReadyQueue, Retries, Slot, Task, TwoTier, able, estimate_s

_REPEAT = re.compile(r"-r\d+\]$")


class CellTasks:
    """Node id -> policy Task, by loading each spec file once with the plugin's own loader,
    and estimating from earlier run files (wall_s of the same id) where there are some."""

    def __init__(self, rootdir: Path, job=None, runs_dir: Path | None = None, newest: int = 20):
        self.rootdir = Path(rootdir)
        self.job = job
        self._files: dict[str, dict] = {}
        self.history: dict[str, float] = {}
        if runs_dir is not None and Path(runs_dir).is_dir():
            files = sorted(Path(runs_dir).glob("*.json"), key=lambda p: p.stat().st_mtime)
            for path in files[-newest:]:            # oldest first: newer runs overwrite
                try:
                    doc = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                for r in doc.get("results", []) if isinstance(doc, dict) else []:
                    if isinstance(r, dict) and r.get("id") and r.get("wall_s"):
                        self.history[r["id"]] = float(r["wall_s"])

    def cell(self, nodeid: str):
        file, sep, name = nodeid.partition("::")
        if not sep:
            return None
        if file not in self._files:
            try:
                cells = load_spec(self.rootdir / file, job=self.job, rootdir=self.rootdir) \
                    if file.endswith((".yaml", ".yml")) else []
            except Exception:  # noqa: BLE001 - the worker reports a broken spec itself
                cells = []
            self._files[file] = {c.id: c for c in cells}
        cells = self._files[file]
        return cells.get(name) or cells.get(_REPEAT.sub("]", name))

    def task(self, nodeid: str, ready_s: float = 0.0) -> Task:
        cell = self.cell(nodeid)
        if cell is None:
            return Task(key=nodeid, device="", estimate_s=0.5, ready_s=ready_s)
        placement = cell.placement
        s = cell.settings
        est = estimate_s(s.warmup, s.min_duration, s.max_duration, s.min_queries,
                         self.history.get(nodeid), converts=cell.runtime != "torch")
        return Task(key=nodeid, device=cell.device,
                    labels=dict(placement.labels) if placement else {},
                    colocate=bool(placement.colocate) if placement else False,
                    runtime=cell.runtime, estimate_s=est, ready_s=ready_s)


def slot_of(node, followers=None, use_facts: bool = True) -> Slot:
    """The policy Slot of an xdist node: INFERBENCH_SLOT=<host>/<device> from its --tx spec
    (a follower's slot: that device only, the follower's labels), else host "local" with any
    device and labels (plain -n N: one host, no inventory, so placement labels do not
    apply). With use_facts, narrowed to what the follower reported having (facts.py)."""
    env = getattr(node.gateway.spec, "env", None) or {}
    name = env.get(SLOT_ENV)
    sid = node.gateway.id
    if not name:
        return Slot(id=sid, host="local")
    host, _, device = name.partition("/")
    follower = (followers or {}).get(host)
    devices, runtimes = frozenset({device}) if device else None, None
    facts = getattr(node, "inferbench_facts", None)     # facts.py: what the host really has
    if facts is not None and use_facts:
        runtimes = facts["runtimes"]
        if devices is not None:
            devices = devices & facts["devices"]        # empty: runs no benchmark
    return Slot(id=sid, host=host, devices=devices,
                labels=dict(follower.labels) if follower else None, runtimes=runtimes)



class TwoTierScheduling:
    """pytest-xdist scheduler running policy.TwoTier: see the module docstring."""

    CAPACITY = 2        # the running item and the next one (xdist's look-ahead)

    def __init__(self, config, log=None, tasks: CellTasks | None = None, followers=None):
        self.config = config
        self.log = log.twotier if log is not None else (lambda *a: None)
        self.numnodes = len(parse_tx_spec_config(config))
        self.tasks_of = tasks or CellTasks(config.rootpath)
        self.followers = {f.host: f for f in (followers or ())}
        self.node2collection: dict = {}
        self.node2pending: dict = {}       # node -> committed item indices, running first
        self.node2slot: dict = {}
        self.collection: list[str] | None = None
        self.tasks: list[Task] = []
        self.queue = ReadyQueue()
        self.policy = TwoTier([])
        self.retries = Retries(limit=1)
        self.t0 = time.monotonic()
        self.decision_s = 0.0
        self.decisions = 0
        self.lookahead_clashes = 0
        self.unplaceable: set = set()
        self.slots_seen: dict = {}
        self.declared: dict = {}           # slot id -> the slot as the inventory declares it
        self.gone: dict = {}               # host -> why its replacement worker did not start
        self.finished: dict = {}           # slot id -> its node, shut down with nothing to do
        self._wrap_clone_node(config)

    # -- the interface DSession uses
    @property
    def nodes(self):
        return list(self.node2pending)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.node2collection) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or len(self.queue):
            return False
        return all(len(p) < 2 for p in self.node2pending.values())

    @property
    def has_pending(self) -> bool:
        return bool(len(self.queue)) or any(self.node2pending.values())

    def add_node(self, node) -> None:
        assert node not in self.node2pending
        self.node2pending[node] = []
        slot = slot_of(node, self.followers)
        self.node2slot[node] = slot
        self.declared[slot.id] = slot_of(node, self.followers, use_facts=False)
        self.slots_seen[slot.id] = slot
        self.policy.add_slot(slot)

    def add_node_collection(self, node, collection) -> None:
        assert node in self.node2pending
        if self.collection_is_completed and self.collection is not None:
            if list(collection) != self.collection:
                other = next(iter(self.node2collection))
                self.log(report_collection_diff(self.collection, collection,
                                                other.gateway.id, node.gateway.id))
                return
        self.node2collection[node] = list(collection)

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is None:
            collections = list(self.node2collection.items())
            first_node, first = collections[0]
            same = True
            for node, col in collections[1:]:
                msg = report_collection_diff(first, col, first_node.gateway.id, node.gateway.id)
                if msg:
                    same = False
                    self.log(msg)
                    import pytest
                    self.config.hook.pytest_collectreport(report=pytest.CollectReport(
                        nodeid=node.gateway.id, outcome="failed", longrepr=msg, result=[]))
            if not same:
                return
            self.collection = first
            self.tasks = [self.tasks_of.task(nodeid) for nodeid in first]
            for task in self.tasks:
                self.queue.add(task)
            self._unable_anywhere()
        self._dispatch()

    def mark_test_complete(self, node, item_index: int, duration: float = 0) -> None:
        self.node2pending[node].remove(item_index)
        self._dispatch()

    def mark_test_pending(self, item: str) -> None:
        assert self.collection is not None
        index = self.collection.index(item)
        old = self.tasks[index]
        task = Task(key=old.key, device=old.device, labels=old.labels, colocate=old.colocate,
                    runtime=old.runtime, estimate_s=old.estimate_s, ready_s=self._now())
        self.tasks[index] = task
        if task.key not in self.queue:
            self.queue.add(task)
        self._dispatch()

    def remove_pending_tests_from_node(self, node, indices) -> None:
        # xdist calls this only in answer to a 'steal' command (its worksteal scheduler); this
        # scheduler never sends one, as xdist's own LoadScheduling does not, which raises too.
        raise NotImplementedError("the two-tier scheduler never asks a worker to give back "
                                  "items ('steal'), so no worker should send them back")

    def remove_node(self, node):
        pending = self.node2pending.pop(node)
        slot = self.node2slot.pop(node)
        self.policy.remove_slot(slot.id)
        if not pending:
            self.finished[slot.id] = node
            self._dispatch()
            self._restart_if_needed(node, slot)
            return None
        crashed = self.collection[pending.pop(0)]
        for index in pending:                    # the look-ahead never started: queue again
            self.queue.add(self.tasks[index])
        self._dispatch()
        return crashed

    # -- crash handling (called from the plugin's pytest_handlecrashitem)
    def retry(self, nodeid: str) -> bool:
        """Re-queue a crashed item once; False when it crashed before (it fails now)."""
        if self.collection is None or nodeid not in self.collection:
            return False
        if not self.retries.crashed(nodeid):
            return False
        self.mark_test_pending(nodeid)
        return True

    # -- decisions
    def _now(self) -> float:
        return time.monotonic() - self.t0

    def _unable_anywhere(self) -> None:
        """An item no slot can run (labels or a device no follower has) still goes to some
        worker, as a plain item (no device, no labels), so it reports: the worker skips it
        with the reason (worker.misplaced) instead of the session waiting for ever."""
        slots = list(self.policy.slots.values())
        self._warn_missing_runtimes(slots)
        for i, task in enumerate(list(self.tasks)):
            if not any(able(task, s) for s in slots):
                self.log("no able slot for", task.key)
                lacking = self._lacking(task)
                if lacking:        # the inventory says some host could, its facts say not
                    self.queue.remove(task)
                    self.report(task.key, "skipped", f"placement: no follower can run it: "
                                                     f"{'; '.join(lacking)}")
                    self.unplaceable.add(task.key)
                    continue
                self.unplaceable.add(task.key)
                self.queue.remove(task)
                self.tasks[i] = Task(key=task.key, device="", estimate_s=0.1)
                self.queue.add(self.tasks[i])

    def _lacking(self, task: Task) -> list[str]:
        """Why each host that the inventory would give the task cannot run it (its facts)."""
        out = []
        for sid, declared in sorted(self.declared.items()):
            real = self.policy.slots.get(sid)
            if real is None or not able(task, declared) or able(task, real):
                continue
            if task.runtime and real.runtimes is not None and task.runtime not in \
                    real.runtimes:
                out.append(f"{real.host} has no {task.runtime} installed")
            else:
                out.append(f"{real.host} lists {', '.join(sorted(declared.devices or ()))} "
                           f"but does not have it")
        return sorted(set(out))

    def _warn_missing_runtimes(self, slots) -> None:
        """One warning line per follower that lacks a runtime some cell needs."""
        needed = {t.runtime for t in self.tasks if t.runtime}
        said = set()
        for slot in slots:
            for runtime in sorted(needed - set(slot.runtimes or needed)):
                if (slot.host, runtime) not in said:
                    said.add((slot.host, runtime))
                    self.warn(f"follower {slot.host} has no {runtime} installed (it said so "
                              f"when its worker came up): its cells go to other followers")

    def warn(self, text: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter") \
            if hasattr(self.config, "pluginmanager") else None
        if tr is not None:
            tr.write_line(f"warning: inferbench: {text}", yellow=True)
        self.log(text)

    def report(self, nodeid: str, outcome: str, reason: str) -> None:
        """Report an item from the controller (no worker will run it): skipped or failed with
        the reason, its cell in the run file like any other result."""
        import pytest
        fspath = nodeid.split("::")[0]
        cell = self.tasks_of.cell(nodeid)
        line = (cell.line or 1) - 1 if cell is not None else None
        rep = pytest.TestReport(
            nodeid=nodeid, location=(fspath, line, nodeid.partition("::")[2]), keywords={},
            outcome=outcome, when="call",
            longrepr=(fspath, line, f"Skipped: {reason}") if outcome == "skipped" else reason)
        if cell is not None:
            rep.inferbench = [{"id": nodeid, "cell": cell.model_dump(mode="json")}]
        self.config.hook.pytest_runtest_logreport(report=rep)

    # -- a follower that went away
    def _wrap_clone_node(self, config) -> None:
        """xdist replaces a crashed worker by starting one more from the same --tx spec
        (DSession._clone_node, called from worker_errordown right after remove_node and
        pytest_handlecrashitem). When the follower itself is gone (its socket server killed,
        its host down) that start raises, out of xdist's event loop: an INTERNALERROR that
        ends the session. Wrapped: the failure becomes one line, the follower's slot stays
        gone, and the cells only it could run are reported failed with the reason."""
        pm = getattr(config, "pluginmanager", None)
        dsession = pm.getplugin("dsession") if pm is not None else None
        original = getattr(dsession, "_clone_node", None)
        if original is None:
            return

        def clone_node(node):
            try:
                return original(node)
            except Exception as exc:  # noqa: BLE001 - any failure to reach the follower
                host = slot_of(node, self.followers).host
                why = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
                self.gone[host] = why
                self.warn(f"follower {host} is gone: its worker crashed and a new one could "
                          f"not start ({why}); it gets no more cells")
                self._fail_unrunnable()
                return None
        dsession._clone_node = clone_node
        self._clone = clone_node

    def _restart_if_needed(self, node, slot) -> None:
        """A node that finished (shut down to start its last item) while another node's
        crash re-queued an item only its slot can now run: start a fresh worker there, or
        the session would end with that item never run ("no active workers")."""
        clone = getattr(self, "_clone", None)
        if clone is None or not len(self.queue):
            return
        live = [self.node2slot[n] for n in self.node2pending if not n.shutting_down]
        if any(able(t, s) for t in self.queue for s in live):
            return
        if any(able(t, slot) for t in self.queue):
            self.log("restarting a worker on", slot.host, "for re-queued items")
            self.finished.pop(slot.id, None)
            clone(node)

    def _fail_unrunnable(self) -> None:
        """Queued items no live slot can run: a worker started again on a follower that is
        still there but whose workers had finished (a crash on the last cell), else failed,
        with why (their followers are gone)."""
        restarted: list = []
        for task in list(self.queue):
            slots = list(self.policy.slots.values()) + restarted
            if task.key not in self.queue or any(able(task, s) for s in slots):
                continue
            slot = self._restart_finished(task)
            if slot is not None:
                restarted.append(slot)
                continue
            self.queue.remove(task)
            gone = "; ".join(f"{h}: {w}" for h, w in sorted(self.gone.items()))
            self.report(task.key, "failed", f"no follower left that can run it (gone: "
                                            f"{gone})")
        self._dispatch()

    def _restart_finished(self, task):
        """Start a worker again on a finished slot, of a follower not gone, that can run
        `task`; that slot, or None."""
        for sid, node in list(self.finished.items()):
            slot = self.slots_seen[sid]
            if slot.host in self.gone or not able(task, slot):
                continue
            del self.finished[sid]
            self.log("restarting a worker on", slot.host, "for a crashed cell")
            self._clone(node)
            return slot
        return None

    def _dispatch(self) -> None:
        if self.collection is None:
            return
        live = {n: p for n, p in self.node2pending.items() if not n.shutting_down}
        by_slot = {self.node2slot[n].id: n for n in live}
        closed = {self.node2slot[n].id for n in self.node2pending if n.shutting_down}
        sends: dict = {}
        for _ in range(2):
            # the second round gives a next item to nodes that got their first one in the
            # first round: without it their item would not start (and, if no node ran,
            # nothing would ever call back: a hang)
            started = time.perf_counter()
            committed = {self.node2slot[n].id: [self.tasks[i] for i in p]
                         for n, p in self.node2pending.items()}
            lookahead = [self.node2slot[n].id for n, p in live.items() if len(p) == 1]
            decisions = self.policy.decide(self.queue, committed, capacity=self.CAPACITY,
                                           lookahead=lookahead, closed=closed,
                                           now=self._now())
            self.decision_s += time.perf_counter() - started
            self.decisions += 1
            for task, sid in decisions:
                node = by_slot[sid]
                index = self._index_of(task)
                self.queue.remove(task)
                self.node2pending[node].append(index)
                sends.setdefault(node, []).append(index)
            if not any(len(p) == 1 for p in live.values()) or not decisions:
                break
        for node, indices in sends.items():
            node.send_runtest_some(indices)
        for node, p in live.items():
            # a node's last item starts only on a shutdown (or a next item): when nothing it
            # could run is queued, let it finish. Idle nodes stay, for crashed items, until
            # DSession shuts every node down once tests_finished.
            if len(p) == 1 and not any(able(t, self.node2slot[node]) for t in self.queue):
                node.shutdown()

    def _index_of(self, task: Task) -> int:
        if not hasattr(self, "_indices"):
            self._indices = {nodeid: i for i, nodeid in enumerate(self.collection)}
        return self._indices[task.key]

    def summary(self) -> dict:
        return {"decisions": self.decisions, "decision_s": round(self.decision_s, 4),
                "workers": len(self.slots_seen),
                "hosts": sorted({s.host for s in self.slots_seen.values()})}


def args_relative_to_rootdir(config) -> None:
    """Controller, with ssh or socket followers: send the workers the command line's paths
    relative to rootdir (a follower's `chdir` is its copy of the rootdir).

    xdist (3.8, workermanage.WorkerController.setup) maps every argument that names an
    existing path onto one of its rsync roots for any worker that is not a plain `popen`, and
    fails with "arg X not relative to an rsync root" otherwise: with no --rsyncdir (followers
    use their own copies, not rsynced ones) every spec or job file given to pytest fails. Its
    module-level make_reltoroot is wrapped, in the controller only: paths under rootdir become
    relative to it, anything else goes to xdist's own mapping (and its message)."""
    from xdist import workermanage
    if not hasattr(workermanage, "make_reltoroot"):   # another xdist: its own mapping stands
        return
    original = getattr(workermanage.make_reltoroot, "inferbench_original",
                       workermanage.make_reltoroot)
    root = Path(config.rootpath).resolve()

    def make_reltoroot(roots, args):
        out, rest = [], []
        for arg in args:
            path, sep, tail = str(arg).partition("::")
            try:
                rel = Path(path).resolve().relative_to(root) if Path(path).exists() else None
            except (OSError, ValueError):
                rel = None
            if rel is None:
                out.append(None)
                rest.append(arg)
            else:
                out.append((str(rel) if str(rel) != "." else ".") + sep + tail)
        mapped = iter(original(roots, rest))
        return [a if a is not None else next(mapped) for a in out]

    make_reltoroot.inferbench_original = original
    workermanage.make_reltoroot = make_reltoroot

    def restore():                           # pytester runs sessions in one process
        workermanage.make_reltoroot = original
    config.add_cleanup(restore)
