"""The two-tier scheduler: placement policy (pure), device leases, the follower inventory, the
xdist scheduler against fake nodes, and end to end with real xdist workers."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from pytest_inferbench.core.errors import SpecError
from pytest_inferbench.schedule import leases
from pytest_inferbench.spec.followers import load_followers
from pytest_inferbench.schedule.policy import (ReadyQueue, Retries, Slot, Task, TwoTier, able,
                                               estimate_s, resources)
from pytest_inferbench.spec import load_job, load_spec

FAST = "warmup: 3, min_duration: 0.15s, max_duration: 0.3s, min_queries: 20"


def cpu(key, est=1.0, **kw):
    return Task(key=key, device="cpu", estimate_s=est, **kw)


def gpu(key, dev="cuda:0", est=1.0, **kw):
    return Task(key=key, device=dev, estimate_s=est, **kw)


# ----------------------------------------------------------------------------- policy

def test_only_able_hosts_get_a_task():
    slots = [Slot("a", "hostA", frozenset({"cpu"}), {"zone": "x"}),
             Slot("b", "hostB", frozenset({"cuda:0"}), {"zone": "y"}, frozenset({"torch"}))]
    assert able(cpu("t"), slots[0]) and not able(cpu("t"), slots[1])
    assert able(gpu("g", "cuda"), slots[1]) and not able(gpu("g", "cuda:1"), slots[1])
    assert not able(cpu("t", labels={"zone": "y"}), slots[0])
    assert able(cpu("t", labels={"zone": "y"}), Slot("n", "local"))   # no inventory: any
    assert not able(gpu("g", runtime="onnxruntime"), slots[1])   # not installed there
    policy = TwoTier(slots)
    out = policy.decide([cpu("c1", labels={"zone": "y"}), gpu("g1"), cpu("c2")], {})
    assert {(t.key, s) for t, s in out} == {("g1", "b"), ("c2", "a")}   # c1: nowhere able


def test_a_cpu_benchmark_has_its_hosts_cpus_to_itself():
    slots = [Slot("a1", "A"), Slot("a2", "A"), Slot("b1", "B")]
    out = TwoTier(slots).decide([cpu("c1"), cpu("c2"), cpu("c3")], {})
    hosts = sorted(s[0] for _, s in out)
    assert len(out) == 2 and hosts == ["a", "b"]          # one CPU cell per host, not two on A
    # a CPU cell running on A: no GPU benchmark starts beside it on A either
    out = TwoTier(slots).decide([gpu("g")], {"a1": [cpu("c")]})
    assert [(t.key, s) for t, s in out] == [("g", "b1")]
    # and a GPU cell running on A keeps CPU benchmarks off A
    out = TwoTier(slots[:2]).decide([cpu("c")], {"a1": [gpu("g")]})
    assert out == []


def test_a_gpu_runs_one_benchmark_at_a_time_but_gpus_run_side_by_side():
    slots = [Slot(f"s{i}", "A") for i in range(3)]
    out = TwoTier(slots).decide([gpu("g1"), gpu("g2"), gpu("g3", "cuda:1")], {})
    assert sorted(t.key for t, _ in out) == ["g1", "g3"]
    assert len({s for _, s in out}) == 2


def test_colocate_true_shares_only_with_cells_that_also_ask():
    slots = [Slot("a1", "A"), Slot("a2", "A"), Slot("a3", "A")]
    both = [cpu("c1", colocate=True), cpu("c2", colocate=True)]
    assert len(TwoTier(slots).decide(both, {})) == 2
    assert TwoTier(slots).decide([cpu("c3", colocate=True)], {"a1": [cpu("x")]}) == []
    assert TwoTier(slots).decide([cpu("c3")], {"a1": [cpu("x", colocate=True)]}) == []
    # a co-locatable CPU cell lets GPU benchmarks run beside it
    assert len(TwoTier(slots).decide([gpu("g")], {"a1": [cpu("x", colocate=True)]})) == 1
    assert resources(cpu("x", colocate=True), slots[0]) == [("A/cpu", False)]


def test_shortest_first_with_aging_so_long_tasks_never_starve():
    q = ReadyQueue(aging=0.5)
    for t in (cpu("long", 10.0), cpu("short", 1.0), cpu("mid", 5.0)):
        q.add(t)
    assert [t.key for t in q] == ["short", "mid", "long"]
    # short tasks that keep arriving later rank behind a long one that has waited
    q.add(cpu("late-short", 1.0, ready_s=100.0))
    assert [t.key for t in q][-1] == "late-short"
    policy = TwoTier([Slot("a", "A")])
    (task, _), = policy.decide(q, {})
    assert task.key == "short"
    q.remove(task)
    assert [t.key for t in q] == ["mid", "long", "late-short"]


def test_a_long_blocked_task_reserves_its_host_so_it_never_starves():
    slots = [Slot("cpu", "A", frozenset({"cpu"})), Slot("g0", "A", frozenset({"cuda:0"})),
             Slot("g1", "A", frozenset({"cuda:1"}))]
    policy = TwoTier(slots, reserve_after_s=10.0)
    busy = {"g0": [gpu("running")]}
    pending = [cpu("c", 1.0), gpu("g", "cuda:1", 1.0)]
    # not waited long: the GPU task fills the free GPU (work-conserving), the CPU one waits
    out = policy.decide(pending, busy, now=5.0)
    assert [t.key for t, _ in out] == ["g"]
    # waited past reserve_after_s: no new GPU task starts on A until the CPU task has run
    out = policy.decide(pending, busy, now=15.0)
    assert out == []
    out = policy.decide(pending, {}, now=15.0)
    assert [t.key for t, _ in out] == ["c"]


def test_work_conserving_a_free_slot_takes_any_task_that_fits():
    # the shortest task is blocked (its host's CPU is busy elsewhere), the next one fits
    pending = [cpu("blocked", 0.5, labels={"h": "a"}), gpu("fits", est=5.0)]
    slots = [Slot("a1", "A", labels={"h": "a"}), Slot("a2", "A", labels={"h": "a"}),
             Slot("b1", "B", labels={"h": "b"})]
    out = TwoTier(slots).decide(pending, {"a1": [cpu("running")]})
    assert [(t.key, s) for t, s in out] == [("fits", "b1")]


def test_tier_one_balances_estimated_remaining_work():
    slots = [Slot("a", "A"), Slot("b", "B")]
    out = TwoTier(slots).decide([gpu("g", "cuda:1")], {"a": [gpu("busy", "cuda:0", 50.0)],
                                                      "b": [gpu("busy2", "cuda:0", 5.0)]},
                                capacity=2)
    assert [s for _, s in out] == ["b"]


def test_lookahead_prefers_what_the_slot_already_holds_and_never_overfills():
    slots = [Slot("a1", "A"), Slot("a2", "A"), Slot("b1", "B", frozenset({"cuda:0"}))]
    committed = {"a1": [cpu("run")]}
    out = TwoTier(slots).decide([gpu("g"), cpu("next")], committed, capacity=2,
                                lookahead=["a1"])
    placed = {t.key: s for t, s in out}
    assert placed["next"] == "a1" and placed["g"] == "b1"   # CPU cell queued behind its twin
    # a full slot (running + next) gets nothing more, and host A's CPUs are taken
    assert TwoTier(slots).decide([cpu("x")], {"a1": [cpu("1"), cpu("2")]}, capacity=2,
                                 lookahead=["a1"]) == []
    # a look-ahead that clashes with another slot is still given (the lease makes it wait)
    out = TwoTier(slots).decide([cpu("x")], {"a1": [gpu("1")], "a2": [cpu("2")]},
                                capacity=2, lookahead=["a1"])
    assert [(t.key, s) for t, s in out] == [("x", "a1")]


def test_a_crashed_task_is_queued_again_once():
    r = Retries(limit=1)
    assert r.crashed("t") is True and r.crashed("t") is False and r.crashed("u") is True


def test_estimates_come_from_history_else_the_settings():
    assert estimate_s(1.0, 5.0, 60.0, 100, history_s=12.0, converts=False) == 12.5
    assert estimate_s(1.0, 5.0, 60.0, 100, converts=True) == pytest.approx(1 + 5 + 2)
    assert estimate_s(50, 0.05, 0.25, 20, converts=False) == pytest.approx(0.25 + 0.05 + 0.5)


# ----------------------------------------------------------------------------- xdist scheduler

class _Spec:
    def __init__(self, env):
        self.env = env


class _Gateway:
    def __init__(self, gid, env):
        self.id, self.spec = gid, _Spec(env)


class FakeNode:
    def __init__(self, gid, env=None):
        self.gateway = _Gateway(gid, env or {})
        self.sent, self.shutting_down = [], False

    def send_runtest_some(self, indices):
        self.sent.extend(indices)

    def shutdown(self):
        self.shutting_down = True


class _Opt:
    tx = ["2*popen"]


class FakeConfig:
    option = _Opt()

    def __init__(self, root):
        self.rootpath = Path(root)

    def getvalue(self, name):
        return getattr(self.option, name)


def _two_node_scheduler(tmp_path, batch_sizes: str):
    """The two-tier scheduler with two local workers and one spec's CPU cells, scheduled;
    (scheduler, worker a, worker b, the cells' node ids)."""
    from pytest_inferbench.schedule.xdist_scheduler import TwoTierScheduling
    (tmp_path / "bench_x.yaml").write_text(f"""
name: x
defaults: {{{FAST}}}
benchmarks:
  - {{model: mlp-tiny, runtime: onnxruntime, batch_size: {batch_sizes}}}
""")
    ids = [f"bench_x.yaml::{c.id}" for c in load_spec(tmp_path / "bench_x.yaml",
                                                        rootdir=tmp_path)]
    sched = TwoTierScheduling(FakeConfig(tmp_path))
    a, b = FakeNode("gw0"), FakeNode("gw1")
    for node in (a, b):
        sched.add_node(node)
        sched.add_node_collection(node, ids)
    sched.schedule()
    return sched, a, b, ids


def test_xdist_scheduler_keeps_one_next_item_and_requeues_a_crash_once(tmp_path):
    sched, a, b, ids = _two_node_scheduler(tmp_path, "[1, 2, 4]")
    assert all(t.device == "cpu" for t in sched.tasks)
    # CPU cells on one host: one node gets the running cell and its next, the other nothing
    assert sorted(len(n.sent) for n in (a, b)) == [0, 2]
    busy, idle = (a, b) if a.sent else (b, a)
    first = busy.sent[0]
    sched.mark_test_complete(busy, first)
    assert len(sched.node2pending[busy]) == 2 and not idle.sent    # look-ahead refilled
    # the busy node crashes while running its second item: handed back, queued again once
    crashed = sched.remove_node(busy)
    assert crashed == ids[busy.sent[1]]
    assert sched.retry(crashed) is True
    assert idle.sent and ids[idle.sent[0]] in (crashed, ids[busy.sent[2]])
    assert sched.retry(crashed) is False                          # a second crash fails it


def test_a_crash_after_the_other_workers_finished_starts_one_again(tmp_path):
    """A worker crashes (its follower gone, so no replacement starts there) after the other
    follower's worker finished: its cells are started again on that follower, not failed
    with "no follower left" (seen when a follower was killed during the last cell)."""
    sched, a, b, _ = _two_node_scheduler(tmp_path, "[1, 2]")
    busy, idle = (a, b) if a.sent else (b, a)
    assert sched.remove_node(idle) is None           # finished: shut down with nothing to do
    crashed = sched.remove_node(busy)
    assert sched.retry(crashed) is True and len(sched.queue) == 2
    started = []
    sched._clone = started.append
    sched.gone["elsewhere"] = "ConnectionRefusedError"
    sched._fail_unrunnable()          # what a failed replacement of the crashed worker calls
    assert started == [idle] and len(sched.queue) == 2   # both cells wait for it, none failed


# ----------------------------------------------------------------------------- leases

def _hold(directory, res, seconds, started, out):
    with leases.hold(res, who="p", directory=directory, timeout_s=30) as info:
        out.put((time.time(), info["wait_s"]))
        started.set()
        time.sleep(seconds)
    out.put(time.time())


def test_a_second_process_waits_for_the_device_lease(tmp_path):
    ctx = multiprocessing.get_context("fork")
    out1, out2, started = ctx.Queue(), ctx.Queue(), ctx.Event()
    first = ctx.Process(target=_hold, args=(tmp_path, [("h/cuda:0", True)], 0.6, started, out1))
    first.start()
    assert started.wait(10)
    second = ctx.Process(target=_hold, args=(tmp_path, [("h/cpu", False), ("h/cuda:0", True)],
                                             0.0, ctx.Event(), out2))
    second.start()
    t1_start, _ = out1.get(timeout=10)
    t1_end = out1.get(timeout=10)
    t2_start, waited = out2.get(timeout=10)
    first.join(5), second.join(5)
    assert t2_start >= t1_end - 0.01 and waited > 0.3


def test_shared_leases_overlap_and_a_held_device_times_out_with_the_holder(tmp_path):
    with leases.hold([("h/cpu", False)], directory=tmp_path):
        with leases.hold([("h/cpu", False)], directory=tmp_path, timeout_s=0.2) as info:
            assert info["wait_s"] < 0.2
    ctx = multiprocessing.get_context("fork")
    started, out = ctx.Event(), ctx.Queue()
    holder = ctx.Process(target=_hold, args=(tmp_path, [("h/cpu", True)], 1.0, started, out))
    holder.start()
    assert started.wait(10)
    with pytest.raises(leases.LeaseTimeout, match=r"h/cpu .*taken exclusively by pid \d+ \(p, since"):
        with leases.hold([("h/cpu", False)], directory=tmp_path, timeout_s=0.2):
            pass
    holder.join(5)


# ----------------------------------------------------------------------------- inventory

def test_followers_and_placement_errors_point_at_the_line(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("name: j\nfollowers:\n  - host: a\n    devices: [cpu, gpu0]\n")
    with pytest.raises(SpecError) as exc:
        load_job(job)
    assert exc.value.line == 4 and "unknown device 'gpu0'" in exc.value.render()
    job.write_text("name: j\nfollowers:\n  - host: a\n  - host: b\n    via: ssh\n")
    with pytest.raises(SpecError, match="via: ssh needs `address`") as exc:
        load_job(job)
    assert exc.value.line == 4
    job.write_text("followers:\n  - host: a\n    lables: {x: y}\n")
    with pytest.raises(SpecError, match="unknown key 'lables' \\(did you mean 'labels'") as exc:
        load_job(job)
    assert exc.value.line == 3
    spec = tmp_path / "bench_p.yaml"
    spec.write_text("name: p\nbenchmarks:\n  - model: mlp-tiny\n    placement:\n"
                    "      colocate: maybe\n")
    with pytest.raises(SpecError) as exc:
        load_spec(spec)
    assert exc.value.line == 5 and "placement.colocate" in exc.value.render()
    spec.write_text("name: p\nbenchmarks:\n  - model: mlp-tiny\n    placement: {labels: "
                    "{gpu: h200}, colocate: true}\n")
    (cell,) = load_spec(spec)
    assert cell.placement.colocate and cell.placement.labels == {"gpu": "h200"}
    assert cell.id == "mlp-tiny[onnxruntime-cpu-fp32-bs1-offline]"    # id unchanged
    # in `defaults`: every entry's, unless the entry says its own (whole, not merged)
    spec.write_text("name: p\ndefaults:\n  placement: {colocate: true}\nbenchmarks:\n"
                    "  - {model: mlp-tiny}\n  - {model: mlp-small, placement: {labels: "
                    "{gpu: h200}}}\n")
    tiny, small = load_spec(spec)
    assert tiny.placement.colocate and tiny.placement.labels == {}
    assert not small.placement.colocate and small.placement.labels == {"gpu": "h200"}
    spec.write_text("name: p\ndefaults:\n  placement:\n    colocate: maybe\nbenchmarks:\n"
                    "  - model: mlp-tiny\n")
    with pytest.raises(SpecError) as exc:
        load_spec(spec)
    assert exc.value.line == 4 and "defaults.placement.colocate" in exc.value.render()
    f = tmp_path / "followers.yaml"
    f.write_text("followers:\n  - {host: g1, via: ssh, address: u@g1, python: /v/bin/python, "
                 "chdir: /srv, devices: [cpu, 'cuda:1']}\n  - {host: s, via: socket, "
                 "address: '10.0.0.2:8888', trusted_network: true}\n")
    specs = [spec for fol in load_followers(f) for spec in fol.tx_specs()]
    assert specs == [
        ("ssh=u@g1//python=/v/bin/python//chdir=/srv//env:INFERBENCH_SLOT=g1/cpu", "g1/cpu"),
        ("ssh=u@g1//python=/v/bin/python//chdir=/srv//env:INFERBENCH_SLOT=g1/cuda:1"
         "//env:CUDA_VISIBLE_DEVICES=1", "g1/cuda:1"),
        ("socket=10.0.0.2:8888//env:INFERBENCH_SLOT=s/cpu", "s/cpu")]
    f.write_text("followers:\n  - {host: a, labels: {zone: 'x/y'}}\n")
    with pytest.raises(SpecError, match="a label is letters") as exc:
        load_followers(f)
    assert exc.value.line == 2


# ----------------------------------------------------------------------------- end to end

def _results(pytester, name="run.json"):
    return json.loads((pytester.path / name).read_text())["results"]


def test_n2_runs_cpu_cells_one_at_a_time_with_their_placement(pytester, monkeypatch,
                                                              tmp_path):
    monkeypatch.setenv("INFERBENCH_LEASE_DIR", str(tmp_path / "leases"))
    pytester.makefile(".yaml", bench_cpu=f"""
        name: cpu
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: mlp-tiny, runtime: onnxruntime, batch_size: [1, 2, 4, 8]}}
        """)
    result = pytester.runpytest("-n", "2", "--infer-json", "run.json", "--infer-no-html")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*two-tier scheduler: 2 worker(s) on local*co-located pairs: 0*"])
    rows = _results(pytester)
    windows = sorted((r["window"]["start"], r["window"]["end"]) for r in rows)
    for (_, end), (start, _) in zip(windows, windows[1:]):
        assert start >= end                                  # no two CPU cells overlapped
    for r in rows:
        p = r["placement"]
        assert p["follower"] == "local" and p["device"] == "cpu" and p["colocated_with"] == []
        assert p["slot"].startswith("gw")


def test_followers_place_a_labelled_cell_on_the_matching_host(pytester, monkeypatch, tmp_path):
    monkeypatch.setenv("INFERBENCH_LEASE_DIR", str(tmp_path / "leases"))
    pytester.makefile(".yaml", job=f"""
        name: fleet
        followers:
          - {{host: alpha, labels: {{zone: a}}}}
          - {{host: beta, labels: {{zone: b}}}}
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: mlp-tiny, runtime: onnxruntime, batch_size: [1, 2]}}
          - {{model: mlp-tiny, runtime: onnxruntime, batch_size: 4,
              placement: {{labels: {{zone: b}}}}}}
          - {{model: mlp-tiny, runtime: onnxruntime, batch_size: 8,
              placement: {{labels: {{zone: c}}}}}}
        """)
    result = pytester.runpytest("--infer-config", "job.yaml", "--infer-json", "run.json",
                                "--infer-no-html")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*two-tier scheduler: 2 worker(s) on alpha, beta*"])
    result.stdout.fnmatch_lines(["*no follower has the labels {'zone': 'c'}*"])
    rows = {r["cell"]["batch_size"]: r for r in _results(pytester)}
    assert rows.pop(8)["status"] == "skipped"
    assert rows[4]["placement"]["follower"] == "beta"
    assert {r["placement"]["follower"] for r in rows.values()} <= {"alpha", "beta"}
    assert all(r["placement"]["slot"].startswith("gw") for r in rows.values())


def test_a_crashed_cell_runs_again_once_then_fails_with_the_reason(pytester, monkeypatch,
                                                                   tmp_path):
    monkeypatch.setenv("INFERBENCH_LEASE_DIR", str(tmp_path / "leases"))
    monkeypatch.setenv("CRASH_MARKS", str(tmp_path))
    pytester.makeconftest("""
        import os, pathlib
        def pytest_runtest_setup(item):
            mark = pathlib.Path(os.environ["CRASH_MARKS"], "crashed-once")
            if "bs2" in item.name:
                os._exit(3)                       # crashes every time
            if "bs1" in item.name and not mark.exists():
                mark.write_text("x")
                os._exit(3)                       # crashes the first time only
        """)
    pytester.makefile(".yaml", bench_crash=f"""
        name: crash
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: mlp-tiny, runtime: torch, batch_size: [1, 2]}}
        """)
    result = pytester.runpytest("-n", "2", "--infer-json", "run.json", "--infer-no-html")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1 and outcomes.get("failed") == 1
    assert outcomes.get("rerun") == 2                 # each crashed once and ran again
    result.stdout.fnmatch_lines(["*crashed while running*bs2*(twice: not run again)*"])
    rows = {r["cell"]["batch_size"]: r for r in _results(pytester)}
    assert rows[1]["status"] == "passed" and rows[1]["placement"]["follower"] == "local"
    assert rows[2]["status"] == "failed" and "crashed while running" in rows[2]["reason"]


# ----------------------------------------------------------------------------- simulator

def test_the_simulator_drives_the_policy_unchanged_and_never_colocates():
    from pytest_inferbench.schedule import simulator as sim
    items = sim.trace(300, seed=1)
    two, fifo, load, steal = sim.compare(4, 2, 300, seed=1)
    assert two.colocated_pairs == 0 and fifo.colocated_pairs == 0 and two.misplaced == 0
    assert load.colocated_pairs > 0 and load.misplaced > 0     # xdist load: blind to devices
    assert steal.policy == "worksteal" and steal.colocated_pairs > 0 and steal.misplaced > 0
    assert two.avg_completion_s < fifo.avg_completion_s        # shortest first pays off
    assert two.decisions <= len(items) + 1


def test_deciding_only_for_changed_hosts_gives_the_same_schedule(monkeypatch):
    from pytest_inferbench.schedule import simulator as sim
    slots, items = sim.fleet(3, 2), sim.trace(200, seed=2)
    fast = sim.simulate_policy(slots, items, reserve_after_s=1e9)
    full_decide = TwoTier.decide
    monkeypatch.setattr(TwoTier, "decide",
                        lambda self, *a, **k: full_decide(self, *a, **{**k, "consider": None}))
    full = sim.simulate_policy(slots, items, reserve_after_s=1e9)
    assert (fast.avg_completion_s, fast.makespan_s) == (full.avg_completion_s, full.makespan_s)


class _Tasks:
    def __init__(self, tasks):
        self.tasks = {t.key: t for t in tasks}

    def task(self, nodeid, ready_s=0.0):
        return self.tasks[nodeid]

    def cell(self, nodeid):
        return None


def test_every_node_with_one_item_gets_a_next_one_or_is_shut_down(tmp_path):
    """A worker starts an item only once it knows the next one: a node left holding one item
    while the others wait on it would hang the session."""
    from pytest_inferbench.schedule.xdist_scheduler import TwoTierScheduling
    tasks = [gpu("g0", "cuda:0", 1.0), gpu("g1", "cuda:1", 1.0), cpu("c", 2.0), cpu("c2", 3.0)]
    sched = TwoTierScheduling(FakeConfig(tmp_path), tasks=_Tasks(tasks))
    a, b = FakeNode("gw0"), FakeNode("gw1")
    for node in (a, b):
        sched.add_node(node)
        sched.add_node_collection(node, [t.key for t in tasks])
    sched.schedule()
    for node in (a, b):
        assert len(node.sent) == 2 or node.shutting_down
    assert {tasks[i].key for i in a.sent[:1] + b.sent[:1]} == {"g0", "g1"}   # GPUs side by side
    # the CPU cells queue behind them (their leases wait for the GPU cells to finish)
    assert {tasks[i].key for i in a.sent[1:] + b.sent[1:]} == {"c", "c2"}


# ----------------------------------------------------------------------------- follower facts

def _venv_without(target: Path, *missing: str) -> Path:
    """A real environment lacking some packages: a venv of this interpreter's base whose
    site-packages links every entry of ours except those distributions."""
    import subprocess
    import sys
    import sysconfig
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(target)],
                   check=True, timeout=120)
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = next(target.glob("lib/python*/site-packages"))
    for entry in ours.iterdir():
        if not entry.name.lower().replace("-", "_").startswith(missing):
            (theirs / entry.name).symlink_to(entry)
    return target / "bin" / "python"


def test_followers_report_what_they_have_and_the_facts_win(pytester, monkeypatch, tmp_path):
    import os
    import platform
    from importlib import metadata
    monkeypatch.setenv("INFERBENCH_LEASE_DIR", str(tmp_path / "leases"))
    python = _venv_without(tmp_path / "no-ort", "onnxruntime")
    pytester.makefile(".yaml", job=f"""
        name: facts
        followers:
          - {{host: alpha, devices: [cpu, 'cuda:0']}}
          - {{host: beta, python: {python}}}
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: mlp-tiny, runtime: [torch, onnxruntime]}}
          - {{model: mlp-tiny, runtime: torch, device: 'cuda:0'}}
        """)
    result = pytester.runpytest("--infer-config", "job.yaml", "--infer-json", "run.json",
                                "--infer-no-html")
    result.assert_outcomes(passed=2, skipped=1)
    # one warning line each, then the facts decide where cells go
    result.stdout.fnmatch_lines(["warning: inferbench: follower alpha lists cuda:0 but has 0 "
                                 "GPU(s) (NVML not available*no cells go to alpha/cuda:0"])
    result.stdout.fnmatch_lines(["warning: inferbench: follower beta has no onnxruntime "
                                 "installed*"])
    assert result.stdout.str().count("follower beta has no onnxruntime") == 1
    doc = json.loads((pytester.path / "run.json").read_text())
    rows = {(r["cell"]["runtime"], r["cell"]["device"]): r for r in doc["results"]}
    assert rows["onnxruntime", "cpu"]["placement"]["follower"] == "alpha"
    skipped = rows["torch", "cuda:0"]
    assert skipped["status"] == "skipped" and skipped["reason"] == (
        "placement: no follower can run it: alpha lists cuda:0 but does not have it")
    alpha, beta = doc["followers"]["alpha"], doc["followers"]["beta"]
    assert alpha["inventory"]["devices"] == ["cpu", "cuda:0"]
    for entry in (alpha, beta):
        facts = entry["facts"]
        assert facts["logical_cores"] == os.cpu_count() and facts["cpu_model"]
        assert facts["python"] == platform.python_version() and facts["gpus"] == []
        assert facts["packages"]["torch"] == metadata.version("torch")
        assert facts["nvml"].startswith("NVML not available") or "driver" in facts["nvml"]
    assert alpha["facts"]["packages"]["onnxruntime"] == metadata.version("onnxruntime")
    assert beta["facts"]["packages"]["onnxruntime"] is None
    assert beta["facts"]["python_executable"] == str(python)


# ----------------------------------------------------------------------------- content hashes

def test_a_follower_whose_copy_of_a_spec_differs_is_refused_by_name(pytester, tmp_path):
    import hashlib
    import shutil
    spec = f"""
        name: h
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: mlp-tiny, runtime: torch, batch_size: [1, 2]}}
        """
    leader = pytester.makefile(".yaml", bench_h=spec)
    pytester.makefile(".yaml", job=f"""
        name: hashes
        followers:
          - {{host: fresh, chdir: {tmp_path / 'fresh'}}}
          - {{host: stale, chdir: {tmp_path / 'stale'}}}
        """)
    for name in ("fresh", "stale"):
        (tmp_path / name).mkdir()
        for f in ("bench_h.yaml", "job.yaml"):
            shutil.copy(pytester.path / f, tmp_path / name / f)
    stale = tmp_path / "stale" / "bench_h.yaml"
    stale.write_bytes(stale.read_bytes().replace(b"[1, 2]", b"[1, 3]"))     # one byte
    result = pytester.runpytest("bench_h.yaml", "--infer-config", "job.yaml", "--infer-json",
                                "run.json", "--infer-no-html")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    ours = hashlib.sha256(leader.read_bytes()).hexdigest()[:12]
    theirs = hashlib.sha256(stale.read_bytes()).hexdigest()[:12]
    result.stderr.fnmatch_lines([
        f"*follower stale ({tmp_path / 'stale'}) does not have the leader's files: "
        f"bench_h.yaml differs (leader {ours}, follower {theirs}). Copy them there*"])
    assert "fresh" not in result.stderr.str()
    assert not (pytester.path / "run.json").exists()


def test_an_ssh_follower_takes_an_ssh_config_and_a_socket_one_no_python(tmp_path):
    f = tmp_path / "followers.yaml"
    f.write_text("followers:\n  - {host: g, via: ssh, address: g1, ssh_config: /k/cfg}\n")
    (fol,) = load_followers(f)
    assert fol.tx_specs() == [("ssh=g1//ssh_config=/k/cfg//env:INFERBENCH_SLOT=g/cpu", "g/cpu")]
    # execnet runs a socket follower's cells in the server's own python: it cannot pick one
    f.write_text("followers:\n  - {host: s, via: socket, address: 'h:1',\n"
                 "     python: /v/bin/python}\n")
    with pytest.raises(SpecError, match="leave out `python`") as exc:
        load_followers(f)
    assert exc.value.line == 2
    f.write_text("followers:\n  - {host: s, address: 'h:1', via: socket, ssh_config: /c}\n")
    with pytest.raises(SpecError, match="`ssh_config` applies to via: ssh only"):
        load_followers(f)


@pytest.mark.parametrize("address", ["10.0.0.7:8888", "bench-box:8888", "0.0.0.0:8888"])
def test_a_socket_follower_off_loopback_is_refused_unless_on_a_trusted_network(tmp_path,
                                                                               address):
    # an execnet socket server runs any code that reaches its port: the spec must say the
    # network is trusted, and the error says where, why and what is safe instead
    f = tmp_path / "followers.yaml"
    f.write_text(f"followers:\n  - host: s\n    via: socket\n    address: '{address}'\n")
    with pytest.raises(SpecError) as exc:
        load_followers(f)
    err = exc.value
    assert err.line == 4 and err.field == "followers[0].address" and err.file == str(f)
    text = err.render()
    for part in ("runs any code", "via: ssh", "ssh -N -L PORT:127.0.0.1:PORT",
                 "trusted_network: true"):
        assert part in text, text
    f.write_text(f"followers:\n  - {{host: s, via: socket, address: '{address}', "
                 f"trusted_network: true}}\n")
    (fol,) = load_followers(f)
    assert fol.trusted_network and fol.tx_specs()[0][0].startswith(f"socket={address}//")


@pytest.mark.parametrize("address", ["127.0.0.1:8888", "127.3.2.1:1", "localhost:8888",
                                     "LocalHost:9"])
def test_a_socket_follower_on_loopback_needs_no_trust(tmp_path, address):
    f = tmp_path / "followers.yaml"
    f.write_text(f"followers:\n  - {{host: s, via: socket, address: '{address}'}}\n")
    (fol,) = load_followers(f)
    assert not fol.trusted_network
    f.write_text("followers:\n  - {host: s, via: ssh, address: u@h, trusted_network: true}\n")
    with pytest.raises(SpecError, match="`trusted_network` applies to via: socket only"):
        load_followers(f)


def test_the_loopback_test_knows_ipv6_and_names():
    from pytest_inferbench.spec.followers import is_loopback
    assert is_loopback("::1") and is_loopback("[::1]") and is_loopback("127.255.0.1")
    assert not any(map(is_loopback, ["::", "10.0.0.1", "128.0.0.1", "localhost.evil.example"]))

