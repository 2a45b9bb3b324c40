"""Start a server for a cell in its own process (free loopback ports), wait until it is
healthy, and always stop it: on success, failure, or Ctrl-C.

Stopping stops every process the server started, not only its process group: Triton's
Python-backend stubs (and the multiprocessing helpers they start) outlive a leader that died
or exited, re-parented to init, and a stub may ignore SIGTERM. Each launch carries a tag in
its environment (INFERBENCH_SERVER_TAG), inherited by everything it starts. `_terminate`
collects the processes first (the leader's tree while it is not yet reaped, its session and
process group, and every process with the tag), sends SIGTERM to the group (the leader
stops Triton cleanly), waits, then SIGTERM and, after a grace, SIGKILL to whatever of the
collected processes (and of a second collection) is still alive. It runs at the end of a
cell's server (pool.py: another server needed, a failed cell, the session's end), when a
launch fails, and at interpreter exit (atexit).

The process launched is a small guard (`_GUARD`, the standard library and psutil only) that
runs the server as its child in the same session: when the server exits, or dies, the guard
stops whatever carries the tag and exits as the server did (same status, same signal); when
the process that launched it dies without stopping it (killed: no atexit), the kernel tells
the guard (PR_SET_PDEATHSIG, SIGUSR1), which asks the server to stop (SIGTERM), waits, and
stops the rest the same way.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from .affinity import split
from .client import Endpoint

_LIVE: set[subprocess.Popen] = set()
TAG_VARIABLE = "INFERBENCH_SERVER_TAG"
_GRACE_S = 15.0             # the leader's clean stop (Triton's exit timeout is 1 s)
_SURVIVOR_GRACE_S = 3.0     # then its leftovers: SIGTERM, this long, SIGKILL
_PR_SET_PDEATHSIG = 1

# argv: TAG GRACE_S SERVER_ARGV...; see the module docstring
_GUARD = r"""# pytest-inferbench server guard
import os, signal, subprocess, sys
tag, grace, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
state = {"child": None, "orphaned": False, "told": False, "armed": False}

def stopping(*_):                   # the launcher's SIGTERM to the group reached the child
    if not state["armed"]:          # too; it has `grace` seconds, then SIGKILL
        state["armed"] = True
        signal.setitimer(signal.ITIMER_REAL, grace)

def orphaned(*_):                   # the launching process died: stop the server
    state["orphaned"] = True
    stopping()
    if state["child"] is not None and not state["told"]:
        state["told"] = True
        try:
            state["child"].send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

def overdue(*_):
    try:
        state["child"].kill()
    except (AttributeError, ProcessLookupError):
        pass

signal.signal(signal.SIGUSR1, orphaned)
signal.signal(signal.SIGTERM, stopping)
signal.signal(signal.SIGINT, stopping)
signal.signal(signal.SIGALRM, overdue)
child = state["child"] = subprocess.Popen(argv)
if state["orphaned"] or os.getppid() == 1:     # the launcher died before this
    orphaned()
code = child.wait()                 # blocks: no wake-ups on the measured host
signal.setitimer(signal.ITIMER_REAL, 0)
import psutil
me, left = os.getpid(), []
for p in psutil.process_iter():
    try:
        if p.pid != me and p.environ().get("INFERBENCH_SERVER_TAG") == tag:
            left.append(p)
    except psutil.Error:
        pass
for p in left:
    try:
        p.terminate()
    except psutil.Error:
        pass
_, left = psutil.wait_procs(left, timeout=3)
for p in left:
    try:
        p.kill()
    except psutil.Error:
        pass
psutil.wait_procs(left, timeout=5)
if code < 0:                        # end as the server did: by the same signal
    try:
        signal.signal(-code, signal.SIG_DFL)
    except (OSError, ValueError):   # SIGKILL, SIGSTOP: no handler to reset
        pass
    os.kill(me, -code)
sys.exit(code)
"""


def _kill_all():
    for proc in list(_LIVE):
        _terminate(proc)


atexit.register(_kill_all)


TOKEN_VARIABLE = "INFERBENCH_TRITON_TOKEN"   # the statistics API's token, for triton_server


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_processes(proc: subprocess.Popen) -> list[psutil.Process]:
    """Every live process of the server launched as `proc`: the leader and its tree while
    the leader is not reaped (its pid is still its own), members of its session or process
    group while so, and any process carrying the launch's tag (re-parented leftovers)."""
    tag = getattr(proc, "inferbench_tag", None)
    found: dict[int, psutil.Process] = {}
    unreaped = proc.returncode is None
    if unreaped:
        try:
            root = psutil.Process(proc.pid)
            for p in (root, *root.children(recursive=True)):
                found[p.pid] = p
        except psutil.Error:
            pass
    me = os.getpid()
    for p in psutil.process_iter():
        if p.pid in found or p.pid == me:
            continue
        try:
            if unreaped and proc.pid in (os.getsid(p.pid), os.getpgid(p.pid)):
                found[p.pid] = p
            elif tag and p.environ().get(TAG_VARIABLE) == tag:
                found[p.pid] = p
        except (psutil.Error, OSError):
            pass
    return [p for p in found.values() if _alive(p)]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _terminate(proc: subprocess.Popen) -> None:
    """Stop the server and every process it started (module docstring); idempotent."""
    tree = server_processes(proc)       # before any kill: re-parenting hides nothing then
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=_GRACE_S)
        except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    # what the leader's stop left: the first collection, and any started since
    seen = {p.pid for p in tree}
    tree += [p for p in server_processes(proc) if p.pid not in seen]
    survivors = [p for p in tree if _alive(p)]
    for p in survivors:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, survivors = psutil.wait_procs(survivors, timeout=_SURVIVOR_GRACE_S)
    for p in survivors:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(survivors, timeout=5)
    proc.stopped_processes = [{"pid": p.pid, "survived_sigterm": p in survivors}
                              for p in tree]
    _LIVE.discard(proc)


def _child_setup(cpus, death_signal: bool):
    """In the guard's process before it runs: its CPUs (the server inherits them), and
    SIGUSR1 when the thread that launched it ends (a killed pytest)."""
    def setup():
        if cpus:
            os.sched_setaffinity(0, cpus)
        if not death_signal:
            return
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return setup


class _OpenAIHealth:
    """Readiness of the plugin's own OpenAI-compatible server (GET /health)."""

    def __init__(self, url: str):
        self.url = url

    def ready(self) -> bool:
        import urllib.request
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False


class LaunchedServer:
    """Context manager: `with LaunchedServer(cell, cache_dir) as endpoint: ...`."""

    def __init__(self, cell, cache_dir: str | Path, ready_timeout: float = 180.0):
        self.cell = cell
        self.cache_dir = str(cache_dir)
        self.ready_timeout = ready_timeout
        self.proc = None
        self.launch_s = None
        self.affinity = split() if cell.serving.pin_cpus else None
        self.tmp = tempfile.TemporaryDirectory(prefix="inferbench-server-")

    def __enter__(self) -> Endpoint:
        serving = self.cell.serving
        cell_file = Path(self.tmp.name, "cell.json")
        cell_file.write_text(json.dumps(self.cell.model_dump(mode="json")))
        token = secrets.token_urlsafe(16)
        if serving.system == "triton":
            http, grpc, metrics = free_port(), free_port(), free_port()
            # the token goes through the environment, never the command line: process
            # monitors record command lines, and results must not carry the token
            argv = ["-m", "pytest_inferbench.serving.triton_server", str(cell_file),
                    self.cache_dir, str(http), str(grpc), str(metrics)]
            port = grpc if serving.protocol == "grpc" else http
            # Triton's restricted-API header; over gRPC it carries the protocol prefix
            headers = {("triton-grpc-protocol-" if serving.protocol == "grpc" else "")
                       + "triton-access-token": token}
        else:
            port = free_port()
            module = "openai_server" if serving.system == "openai" else "http_server"
            argv = ["-m", f"pytest_inferbench.serving.{module}", str(cell_file),
                    self.cache_dir, str(port)]
            headers = {}
        # generative cells reach the server over its OpenAI-compatible API
        self.url, self.served_model = f"http://127.0.0.1:{port}", self.cell.model_label
        self.log = Path(self.tmp.name, "server.log")
        tag = f"{os.getpid()}-{secrets.token_hex(8)}"
        with open(self.log, "w") as out:
            cpus = self.affinity["server"] if self.affinity else None
            # the server and everything it starts stay on its CPUs and carry the tag.
            # The death signal follows the launching thread: set only from the main one
            # (a pool's server outlives the worker thread of one cell otherwise)
            main = threading.current_thread() is threading.main_thread()
            guard = [sys.executable, "-c", _GUARD, tag, str(_GRACE_S)]
            self.proc = subprocess.Popen([*guard, sys.executable, *argv], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_child_setup(cpus, main) if cpus or main
                                         else None,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1",
                                              TAG_VARIABLE: tag, TOKEN_VARIABLE: token})
        self.proc.inferbench_tag = tag
        _LIVE.add(self.proc)
        self._address = (f"127.0.0.1:{port}", serving.protocol, serving.system, headers)
        endpoint = (_OpenAIHealth(self.url) if serving.system == "openai"
                    else self.endpoint(self.cell.workload.timeout))
        t0 = time.monotonic()
        try:
            self._wait_ready(endpoint)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.launch_s = time.monotonic() - t0
        return endpoint

    def endpoint(self, timeout: float) -> Endpoint:
        """A client of this server with the given per-request timeout (one per cell)."""
        url, protocol, system, headers = self._address
        return Endpoint(url, "model", protocol, system, headers, timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _wait_ready(self, endpoint: Endpoint) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.cell.serving.system} server exited with status "
                                  f"{self.proc.returncode} before it was ready:\n{self.log_tail()}")
            if endpoint.ready():
                return
            time.sleep(0.25)
        raise ServerError(f"{self.cell.serving.system} server not healthy after "
                          f"{self.ready_timeout:g}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            _terminate(self.proc)
        self.tmp.cleanup()
