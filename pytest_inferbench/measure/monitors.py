"""Process monitors that cost nothing during the measured window.

No sampling thread (it would contend for the GIL with the measured loop): CPU use comes from
the kernel's counters before and after, and the peak RSS of the window from VmHWM after
resetting it through /proc/self/clear_refs (Linux >= 4.0). Where that reset is not possible the
lifetime peak is reported and marked so.
"""

from __future__ import annotations

import os
import resource
import sys
import time

import psutil


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# Other processes using more than this share of the host's CPUs during the window make the
# host "contended": neither latency nor capacity is then the system's own.
CONTENDED_SHARE = 0.10


def _ours(proc: psutil.Process) -> list[psutil.Process]:
    """This process, its descendants, and every process in the sessions its children lead: a
    launched server runs in a session of its own, and daemons it starts (Triton's server and
    backend stubs) are re-parented to init but stay in that session."""
    tree = [proc, *proc.children(recursive=True)]
    sessions = {p.pid for p in tree[1:]}
    if sessions:
        seen = {p.pid for p in tree}
        for p in psutil.process_iter():
            try:
                if p.pid not in seen and os.getsid(p.pid) in sessions:
                    tree.append(p)
            except (psutil.Error, OSError):
                pass
    return tree


def _tree_cpu_seconds(proc: psutil.Process) -> dict[int, float]:
    """CPU seconds of this process and the processes it started (launched servers, helpers)."""
    out = {}
    for p in _ours(proc):
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


class ProcessMonitor:
    def __init__(self):
        self._proc = psutil.Process(os.getpid())

    def start(self) -> None:
        self._window_peak = _reset_peak_rss()
        self._cpu0 = self._proc.cpu_times()
        self._tree0 = _tree_cpu_seconds(self._proc)
        self._sys0 = psutil.cpu_times()
        self._t0 = time.perf_counter()

    def stop(self) -> dict:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        cpu1 = self._proc.cpu_times()
        sys1 = psutil.cpu_times()
        used = (cpu1.user - self._cpu0.user) + (cpu1.system - self._cpu0.system)
        sys_busy = sum(sys1) - sys1.idle - getattr(sys1, "iowait", 0.0)
        sys_busy0 = sum(self._sys0) - self._sys0.idle - getattr(self._sys0, "iowait", 0.0)
        sys_total = sum(sys1) - sum(self._sys0)
        tree1 = _tree_cpu_seconds(self._proc)
        ours = sum(t - self._tree0.get(pid, 0.0) for pid, t in tree1.items())
        ncpu = psutil.cpu_count() or 1
        # system busy time is in CPU-seconds over all CPUs; the window is wall seconds
        other = max(0.0, (sys_busy - sys_busy0) - ours) / wall if sys_total > 0 else None
        freq = None
        try:
            f = psutil.cpu_freq()
            freq = round(f.current, 1) if f and f.current else None
        except Exception:  # noqa: BLE001 - platforms where psutil cannot read the frequency
            pass
        return {
            "cpu_cores_used": round(used / wall, 3),
            "cpu_percent_system": round(100.0 * (sys_busy - sys_busy0) / sys_total, 1)
            if sys_total > 0 else None,
            "peak_rss_mb": round(_peak_rss_bytes() / 2**20, 1),
            "peak_rss_scope": "window" if self._window_peak else "process",
            "cpu_freq_mhz": freq,
            "tree_cpu_cores_used": round(ours / wall, 3),   # with launched servers
            "other_cpu_cores": round(other, 3) if other is not None else None,
            "host_contended": bool(other is not None and other > CONTENDED_SHARE * ncpu),
        }
