"""Process monitors that cost nothing during the measured window.

No sampling thread (it would contend for the GIL with the measured loop): CPU use comes from
the kernel's counters before and after, and the peak RSS of the window from VmHWM after
resetting it through /proc/self/clear_refs (Linux >= 4.0). Where that reset is not possible the
lifetime peak is reported and marked so.

Host contention ("HOST BUSY", results/summary.py): the host's busy CPU time in the window
minus the system under test's, per wall second, is `other_cpu_cores`; over CONTENDED_SHARE
of the host's CPUs is `host_contended`. The system under test is this process and what it
started (launched servers: `_ours`), and a server on this host that it talks to: an
endpoint given by URL is a process like any other, so the monitor finds it. The TCP
connections of this process (and its children) to an address of this host, at the start and
at the end of the window, lead to the processes listening on those ports; each counts with
its descendants, and with its ancestors in its own process group that are not this
process's (PyTriton's Python process, which runs the model, is tritonserver's parent), and
their descendants. Their CPU is `server_cpu_cores`, not other processes'; which pids and
commands were taken, and why, is `server_processes`. A remote endpoint has no such
connection: nothing changes. `endpoint_ports` names the ports when the caller knows them
(nothing else is then taken). The busiest other processes of the window are listed in
`other_processes`, so that a HOST BUSY says who.
"""

from __future__ import annotations

import ipaddress
import os
import resource
import socket
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


def _is_local(ip: str, local: set[str]) -> bool:
    try:
        return ip in local or ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


def _local_addresses() -> set[str]:
    out = {"0.0.0.0", "::"}
    try:
        for addrs in psutil.net_if_addrs().values():
            out.update(a.address.split("%")[0] for a in addrs
                       if a.family in (socket.AF_INET, socket.AF_INET6))
    except (OSError, psutil.Error):
        pass
    return out


def _cpu_snapshot() -> dict[int, tuple[float, float, str]]:
    """pid -> (create time, CPU seconds, name) of every process one can read."""
    out = {}
    for p in psutil.process_iter(["create_time", "cpu_times", "name"]):
        info = p.info
        t = info.get("cpu_times")
        if t is not None and info.get("create_time") is not None:
            out[p.pid] = (info["create_time"], t.user + t.system, info.get("name") or "")
    return out


def _command(pid: int) -> str:
    """What a process is, without its arguments (they may carry tokens or passwords, and
    results are shared): the program, and for an interpreter the script or -m module."""
    try:
        p = psutil.Process(pid)
        argv = p.cmdline()
    except psutil.Error:
        return "?"
    if not argv:
        return p.name()
    program = os.path.basename(argv[0])
    if program.startswith("python") and len(argv) > 1:
        if argv[1] == "-m" and len(argv) > 2:
            return f"{program} -m {argv[2]}"
        if argv[1] == "-c":
            return f"{program} -c ..."
        return f"{program} {os.path.basename(argv[1])}"
    return program


def local_servers(tree: list[psutil.Process], ports: set[int] | None = None) -> dict[int, str]:
    """pid -> why, for the processes serving this tree's TCP connections to this host (or
    listening on `ports`, when given): the listener, its descendants, its ancestors in its
    own process group (not this tree's nor its ancestors) and theirs (module docstring)."""
    ours = {p.pid for p in tree}
    if ports is None:
        local = _local_addresses()
        ports = set()
        for p in tree:
            try:
                for c in p.net_connections(kind="tcp"):
                    if c.status == psutil.CONN_ESTABLISHED and c.raddr and \
                            _is_local(c.raddr.ip, local):
                        ports.add(c.raddr.port)
            except (psutil.Error, OSError):
                pass
    if not ports:
        return {}
    try:
        listening = [c for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port in ports and c.pid]
    except (psutil.Error, OSError):
        return {}
    mine = set(ours)
    try:
        mine.update(a.pid for a in tree[0].parents())
    except (psutil.Error, IndexError):
        pass
    found: dict[int, str] = {}
    for c in listening:
        if c.pid in ours:
            continue            # a server this process launched: already its own
        why = f"listens on {c.laddr.ip}:{c.laddr.port}, which this process is connected to"
        try:
            root = psutil.Process(c.pid)
            group = os.getpgid(c.pid)
            top = root
            for a in root.parents():
                if a.pid in mine or a.pid == 1 or os.getpgid(a.pid) != group:
                    break
                top = a
            members = [top, *top.children(recursive=True)]
        except (psutil.Error, OSError):
            members = []
        found.setdefault(c.pid, why)
        for m in members:
            if m.pid not in mine:
                found.setdefault(m.pid, f"in the process tree of pid {c.pid} ({why})")
    return found


class ProcessMonitor:
    def __init__(self, endpoint_ports: set[int] | None = None):
        self._proc = psutil.Process(os.getpid())
        self._ports = set(endpoint_ports) if endpoint_ports else None

    def start(self) -> None:
        self._window_peak = _reset_peak_rss()
        self._cpu0 = self._proc.cpu_times()
        self._tree0 = _tree_cpu_seconds(self._proc)
        self._servers0 = local_servers(_ours(self._proc), self._ports)
        self._all0 = _cpu_snapshot()
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
        servers = {**self._servers0, **local_servers(_ours(self._proc), self._ports)}
        all1 = _cpu_snapshot()
        per = {}            # CPU seconds of each process in the window (those one can read)
        for pid, (created, cpu, name) in all1.items():
            before = self._all0.get(pid)
            if before is not None and before[0] == created:
                per[pid] = cpu - before[1]
            elif created >= time.time() - wall - 1.0:     # started inside the window
                per[pid] = cpu
        server = sum(per.get(pid, 0.0) for pid in servers if pid not in tree1)
        ncpu = psutil.cpu_count() or 1
        # system busy time is in CPU-seconds over all CPUs; the window is wall seconds
        other = max(0.0, (sys_busy - sys_busy0) - ours - server) / wall \
            if sys_total > 0 else None
        others = sorted(((c, pid) for pid, c in per.items()
                         if pid not in tree1 and pid not in servers and c / wall >= 0.02),
                        reverse=True)[:5]
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
            # an endpoint's server on this host: the system under test, not host noise
            "server_cpu_cores": round(server / wall, 3) if servers else None,
            "server_processes": [{"pid": pid, "command": _command(pid), "why": why,
                                  "cpu_cores": round(per.get(pid, 0.0) / wall, 3)}
                                 for pid, why in sorted(servers.items())] or None,
            "other_cpu_cores": round(other, 3) if other is not None else None,
            "other_processes": [{"pid": pid, "name": all1[pid][2],
                                 "cpu_cores": round(c / wall, 3)} for c, pid in others],
            "host_contended": bool(other is not None and other > CONTENDED_SHARE * ncpu),
        }
