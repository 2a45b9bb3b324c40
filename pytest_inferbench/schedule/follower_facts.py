"""Run on a follower, sent there whole by execnet (`gateway.remote_exec(follower_facts)`, see
facts.ask): the follower's facts as one plain dict. Why a module of its own: execnet sends a
function alone, without the module around it, so the facts could be split into readable
steps only by sending their module; it therefore imports only the standard library (and
whatever it finds on the follower), never the plugin.

Protocol: receives the distribution names to report the versions of, sends the facts.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata

DRIVER_GPUS = "/proc/driver/nvidia/gpus"


def facts(dists) -> dict:
    gpus, nvml = nvml_gpus()
    if gpus is None:
        gpus, nvml = driver_gpus(nvml)
    return {"hostname": socket.gethostname(), "cpu_model": cpu_model(),
            "logical_cores": os.cpu_count(), "usable_cores": usable_cores(),
            "gpus": gpus, "nvml": nvml, "python": platform.python_version(),
            "python_executable": sys.executable, "cwd": os.getcwd(),
            "packages": versions(dists)}


def cpu_model() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def versions(dists) -> dict:
    found = {}
    for name in dists:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def nvml_gpus() -> tuple[list | None, str]:
    """The GPUs NVML lists (None when NVML cannot be used) and the driver, or why not."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None, "NVML not available (pynvml / nvidia-ml-py not installed)"
    try:
        pynvml.nvmlInit()
        try:
            gpus = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                gpus.append({"index": i, "name": name.decode() if isinstance(name, bytes)
                             else name,
                             "memory_mib": pynvml.nvmlDeviceGetMemoryInfo(h).total >> 20})
            driver = pynvml.nvmlSystemGetDriverVersion()
            return gpus, "driver " + (driver.decode() if isinstance(driver, bytes) else driver)
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 - no driver, no library: say which
        return None, f"NVML not available ({type(exc).__name__}: {exc})"


def driver_gpus(nvml: str) -> tuple[list, str]:
    """Without NVML, the driver's own list: one directory per GPU it drives (no directory:
    no NVIDIA driver, so no GPU that CUDA could use either)."""
    if not os.path.isdir(DRIVER_GPUS):
        return [], nvml + f"; no NVIDIA driver ({DRIVER_GPUS} absent)"
    gpus = []
    for i, bus in enumerate(sorted(os.listdir(DRIVER_GPUS))):
        name = "?"
        try:
            with open(os.path.join(DRIVER_GPUS, bus, "information")) as f:
                for line in f:
                    if line.startswith("Model:"):
                        name = line.split(":", 1)[1].strip()
        except OSError:
            pass
        gpus.append({"index": i, "name": name, "bus": bus})
    return gpus, nvml + f"; {len(gpus)} GPU(s) in {DRIVER_GPUS}"


if __name__ == "__channelexec__":
    channel.send(facts(channel.receive()))  # noqa: F821 - execnet's global
