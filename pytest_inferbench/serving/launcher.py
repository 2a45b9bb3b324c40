"""Start a server for a cell in its own process (free loopback ports), wait until it is
healthy, and always stop it: on success, failure, or Ctrl-C (process group killed)."""

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
import time
from pathlib import Path

from .client import Endpoint

_LIVE: set[subprocess.Popen] = set()


def _kill_all():
    for proc in list(_LIVE):
        _terminate(proc)


atexit.register(_kill_all)


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    _LIVE.discard(proc)


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
        from .affinity import split
        self.affinity = split() if cell.serving.pin_cpus else None
        self.tmp = tempfile.TemporaryDirectory(prefix="inferbench-server-")

    def __enter__(self) -> Endpoint:
        serving = self.cell.serving
        cell_file = Path(self.tmp.name, "cell.json")
        cell_file.write_text(json.dumps(self.cell.model_dump(mode="json")))
        token = secrets.token_urlsafe(16)
        if serving.system == "triton":
            http, grpc, metrics = free_port(), free_port(), free_port()
            argv = ["-m", "pytest_inferbench.serving.triton_server", str(cell_file),
                    self.cache_dir, str(http), str(grpc), str(metrics), token]
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
        with open(self.log, "w") as out:
            cpus = self.affinity["server"] if self.affinity else None
            self.proc = subprocess.Popen([sys.executable, *argv], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         # the server and everything it starts stay on its CPUs
                                         preexec_fn=(lambda: os.sched_setaffinity(0, cpus))
                                         if cpus else None,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
