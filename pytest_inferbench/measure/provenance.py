"""Where and with what a run was measured. Versions come from package metadata, so the
controller never imports torch just to name its version."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import psutil

from .gpu_monitor import gpu_inventory

PACKAGES = ("pytest-inferbench", "pytest", "numpy", "torch", "onnx", "onnxruntime",
            "onnxruntime-gpu", "tensorrt", "nvidia-ml-py", "pytest-xdist")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# where CI systems name the branch of a detached checkout
BRANCH_VARS = ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_BRANCH", "BRANCH_NAME",
               "BUILDKITE_BRANCH", "GIT_BRANCH")


def _git(rootdir: str) -> dict | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=rootdir, capture_output=True,
                                text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=rootdir, capture_output=True, text=True, timeout=5)
        branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=rootdir,
                                capture_output=True, text=True, timeout=5).stdout.strip()
        if branch in ("", "HEAD"):      # detached (CI checkouts): the CI's own name for it
            branch = next((os.environ[v] for v in BRANCH_VARS if os.environ.get(v)), None)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip()),
                "branch": branch}
    except (OSError, subprocess.SubprocessError):
        return None


def _gpu() -> dict:
    return gpu_inventory()


def versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def noise_factors() -> dict:
    """What can make one process faster than the next and the harness does not set
    (benchmarks/session_effect.py measured which matter): transparent huge pages, address-
    space randomisation, the hash seed, the frequency governor, the CPUs this process may
    use, and thread-count variables."""
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    return {
        "thp": thp[thp.index("[") + 1:thp.index("]")] if thp and "[" in thp else thp,
        "aslr": _read("/proc/sys/kernel/randomize_va_space"),
        "hash_seed": os.environ.get("PYTHONHASHSEED") or "random",
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None,
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
                       if k in os.environ},
    }


def collect(rootdir: str) -> dict:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "versions": versions(),
        "git": _git(rootdir),
        "gpu": _gpu(),
        "argv": sys.argv,
        "noise_factors": noise_factors(),
        "start_time": now_iso(),
    }
