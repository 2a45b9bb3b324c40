"""Follower self-report: what a follower really has (CPU model, cores, GPUs by NVML, installed
runtimes, python), asked over the worker's own execnet gateway before xdist starts the
worker on it, compared with the inventory, and recorded in the run file's `followers`.

The ask runs in xdist's pytest_configure_node (controller; called in WorkerController.setup
after the gateway exists, its chdir and env applied, before the worker's remote module runs:
the gateway is still free for a remote_exec). The facts are gathered by follower_facts.py,
sent whole (execnet remote_exec of the module), which imports only the standard library and
whatever it finds there.
The facts win over the inventory: a device the follower lists but NVML does not find, or a
runtime whose package is not installed there, is taken off the follower's slots (the
scheduler's policy.Slot devices/runtimes), with one warning line each; cells no follower can
run then are reported skipped with the reason (xdist_scheduler).
"""

from __future__ import annotations

import pytest

from ..spec.followers import SLOT_ENV
from ..spec.runtime import RUNTIMES
from . import file_hashes, follower_facts

FLEET_KEY = pytest.StashKey["Fleet"]()

# runtime (spec name) -> distributions that provide it (any one is enough)
RUNTIME_DISTS = {"torch": ("torch",), "torchscript": ("torch",), "torch_compile": ("torch",),
                 "onnxruntime": ("onnxruntime", "onnxruntime-gpu")}
REPORTED_DISTS = ("torch", "onnxruntime", "onnxruntime-gpu", "tritonclient", "nvidia-pytriton",
                  "pytest", "pytest-xdist", "pytest-inferbench")


def ask(gateway) -> dict:
    """The follower's facts, over its gateway (before the xdist worker takes it over)."""
    channel = gateway.remote_exec(follower_facts)
    channel.send(list(REPORTED_DISTS))
    facts = channel.receive(timeout=120)
    channel.waitclose(timeout=30)
    return facts


def installed_runtimes(facts: dict) -> frozenset:
    """Runtime names whose package is installed on the follower (unknown runtimes count as
    installed: nothing to check them by)."""
    packages = facts.get("packages") or {}
    return frozenset(name for name in set(RUNTIMES) | set(RUNTIME_DISTS)
                     if name not in RUNTIME_DISTS
                     or any(packages.get(d) for d in RUNTIME_DISTS[name]))


def real_devices(follower, facts: dict) -> tuple[frozenset, list[str]]:
    """The follower's listed devices that it has, and one warning per listed GPU it lacks.
    Without NVML a listed GPU cannot be confirmed: it is kept (the cell skips at run time if
    CUDA finds none) and the warning says so."""
    gpus = facts.get("gpus")
    keep, warnings = set(), []
    for device in follower.devices:
        if not device.startswith("cuda:"):
            keep.add(device)
            continue
        index = int(device.split(":")[1])
        if gpus is None:
            keep.add(device)
            warnings.append(f"follower {follower.host} lists {device}, which cannot be "
                            f"confirmed there: {facts.get('nvml')}")
        elif index < len(gpus):
            keep.add(device)
        else:
            warnings.append(f"follower {follower.host} lists {device} but has {len(gpus)} "
                            f"GPU(s) ({facts.get('nvml')}): no cells go to {follower.host}/"
                            f"{device}")
    return frozenset(keep), warnings


class Fleet:
    """Controller: facts per follower host (asked once per host), warnings said once."""

    def __init__(self, followers):
        self.followers = {f.host: f for f in followers}
        self.facts: dict[str, dict] = {}
        self.warned: set = set()

    def check(self, node, terminal=None) -> None:
        """pytest_configure_node: ask the node's follower (first slot of each host), set
        node.inferbench_facts = {host, devices, runtimes} for the scheduler's slot."""
        env = getattr(node.gateway.spec, "env", None) or {}
        host = (env.get(SLOT_ENV) or "").partition("/")[0]
        follower = self.followers.get(host)
        if follower is None:
            return
        if host not in self.facts:
            self.facts[host] = ask(node.gateway)
        facts = self.facts[host]
        devices, warnings = real_devices(follower, facts)
        runtimes = installed_runtimes(facts)
        # (a runtime it lacks is warned about by the scheduler, once it knows the cells)
        for line in warnings:
            if line not in self.warned:
                self.warned.add(line)
                if terminal is not None:
                    terminal.write_line(f"warning: inferbench: {line}", yellow=True)
        facts.setdefault("warnings", [])
        facts["warnings"] = sorted(set(facts["warnings"]) | set(warnings))
        node.inferbench_facts = {"host": host, "devices": devices, "runtimes": runtimes}

    def section(self) -> dict:
        """The run file's `followers`: per host, the inventory entry and what it reported."""
        out = {}
        for host, follower in self.followers.items():
            entry = {"inventory": follower.model_dump(mode="json")}
            if host in self.facts:
                entry["facts"] = self.facts[host]
            out[host] = entry
        return {"followers": out} if out else {}


def check_node(node, followers, job=None) -> None:
    """The plugin's pytest_configure_node (controller, before the worker starts): the
    leader's files against the follower's copy (file_hashes: a difference stops the session),
    then the follower's facts (Fleet.check)."""
    config = node.config
    fleet = config.stash.get(FLEET_KEY, None)
    if fleet is None:
        fleet = config.stash[FLEET_KEY] = Fleet(followers)
    env = getattr(node.gateway.spec, "env", None) or {}
    follower = fleet.followers.get((env.get(SLOT_ENV) or "").partition("/")[0])
    if follower is None:
        return
    try:
        file_hashes.check_node(node, follower, job, config.getoption("--infer-followers"))
    except pytest.UsageError:
        # xdist has no teardown for a session that fails to start: close what it opened
        dsession = config.pluginmanager.getplugin("dsession")
        group = getattr(getattr(dsession, "nodemanager", None), "group", None)
        if group is not None:
            group.terminate(5)
        raise
    fleet.check(node, config.pluginmanager.getplugin("terminalreporter"))


def run_file_section(config) -> dict:
    fleet = config.stash.get(FLEET_KEY, None)
    return fleet.section() if fleet is not None else {}
