"""Followers on real "hosts": two network namespaces on this machine, one reached over ssh (a
real sshd inside it), one over an execnet socket server inside it. Each test runs a real pytest
session in a subprocess (the leader) whose job file lists both followers, then reads its run
file. Root only (namespaces, veth pairs); each test skips naming what is missing."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
VENV_PYTHON = sys.executable
# short cells: the point is where they ran and when, not their numbers
FAST = "warmup: 3, min_duration: 0.2s, max_duration: 0.4s, min_queries: 20"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces and veth pairs)"
    if shutil.which("ip") is None:
        return "needs the `ip` command (iproute2)"
    if not Path(SSHD).exists():
        return f"needs an sshd binary at {SSHD} (apt-get install openssh-server)"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "needs the ssh client and ssh-keygen (apt-get install openssh-client)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def _run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)


class Fleet:
    """Two namespaces with a veth pair each to the root namespace (10.213.N.x/30, N and the
    names random so that parallel runs do not clash): `ssh` runs sshd, `sock` execnet socket
    servers. Everything made is listed as it is made, so close() removes exactly that."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.suffix = secrets.token_hex(3)
        self.net = int(self.suffix[:2], 16)
        self.ns: dict[str, str] = {}
        self.ip: dict[str, str] = {}
        self.links: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []
        self.socket_servers: dict[int, subprocess.Popen] = {}
        self.ssh_config = tmp / "ssh_config"
        self.lease_dir = tmp / "leases"          # the followers' (namespaces share files)
        self.host = {"ssh": f"ssh-{self.suffix}", "sock": f"sock-{self.suffix}"}

    def start(self):
        for i, kind in enumerate(("ssh", "sock")):
            name, outer, inner = f"ib{kind[:2]}-{self.suffix}", f"ib{self.suffix}{i}a", \
                f"ib{self.suffix}{i}b"
            _run("ip", "netns", "add", name)
            self.ns[kind] = name
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            self.links.append(outer)
            _run("ip", "link", "set", inner, "netns", name)
            _run("ip", "addr", "add", f"10.213.{self.net}.{4 * i + 1}/30", "dev", outer)
            _run("ip", "link", "set", outer, "up")
            inside = ("ip", "netns", "exec", name)
            _run(*inside, "ip", "addr", "add", f"10.213.{self.net}.{4 * i + 2}/30", "dev", inner)
            _run(*inside, "ip", "link", "set", inner, "up")
            _run(*inside, "ip", "link", "set", "lo", "up")
            self.ip[kind] = f"10.213.{self.net}.{4 * i + 2}"
        self._start_sshd()
        self.start_socket_server(8888)
        self._wait_port(self.ip["ssh"], 2222)
        return self

    def _start_sshd(self):
        t = self.tmp
        for key in ("host_key", "client_key"):
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(t / key))
        shutil.copy(t / "client_key.pub", t / "authorized_keys")
        Path("/run/sshd").mkdir(exist_ok=True)           # sshd's privilege separation dir
        (t / "sshd_config").write_text(
            f"ListenAddress {self.ip['ssh']}:2222\nHostKey {t}/host_key\n"
            f"AuthorizedKeysFile {t}/authorized_keys\nPermitRootLogin yes\nStrictModes no\n"
            f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"PidFile {t}/sshd.pid\nSetEnv INFERBENCH_LEASE_DIR={self.lease_dir}\n")
        self.ssh_config.write_text(
            f"Host follower-ssh\n  HostName {self.ip['ssh']}\n  Port 2222\n  User root\n"
            f"  IdentityFile {t}/client_key\n  IdentitiesOnly yes\n"
            f"  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n"
            f"  LogLevel ERROR\n")
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", self.ns["ssh"], SSHD, "-D", "-e", "-f",
             str(t / "sshd_config")], stdout=subprocess.DEVNULL,
            stderr=self._log("sshd.log")))

    def start_socket_server(self, port: int) -> subprocess.Popen:
        """execnet's own socket server, run by the venv's python inside the namespace (`ip
        netns exec` execs it: the pid is the server's, which is also the worker's process)."""
        import execnet
        script = Path(execnet.__file__).parent / "script" / "socketserver.py"
        env = {**os.environ, "INFERBENCH_LEASE_DIR": str(self.lease_dir)}
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns["sock"], VENV_PYTHON,
                                 str(script), f"{self.ip['sock']}:{port}"], env=env,
                                cwd=self.tmp, stdout=self._log(f"socket-{port}.log"),
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.socket_servers[port] = proc
        self._wait_port(self.ip["sock"], port)
        return proc

    def _log(self, name):
        self.logs.append(open(self.tmp / name, "wb"))
        return self.logs[-1]

    def _wait_port(self, ip, port, timeout=10.0):
        import socket
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket() as s:
                s.settimeout(0.5)
                # a connect to the socket server would be served as a session: probe only
                # that something listens (the server accepts one connection at a time)
                if s.connect_ex((ip, port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {ip}:{port} after {timeout}s")
            time.sleep(0.1)

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for name in self.ns.values():
            # anything still running inside (an sshd session child outlives its listener)
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for link in self.links:              # deleting one end of a veth removes both
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        for log in self.logs:
            log.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    made = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        yield made.start()
    finally:
        made.close()                        # namespaces, veths and processes, even on failure


# Identical in every copy (conftest files are not part of the content check): each process
# that runs an item notes it with its network namespace, the proof of where it ran.
CONFTEST = """
import os
import time
from pathlib import Path

def pytest_runtest_logfinish(nodeid, location):
    with open("ran-here.txt", "a") as f:
        f.write(f"{nodeid}\\t{os.stat('/proc/self/ns/net').st_ino}\\n")

def pytest_sessionstart(session):
    # a start line for leaders that must measure at the same time (set in their
    # environment only, never a follower's; before xdist starts the workers, trylast):
    # start-up skew must not serialise them
    spec = os.environ.get("TEST_START_LINE")
    if spec:
        where, name, count = spec.split(":")
        (Path(where) / name).touch()
        deadline = time.monotonic() + 60
        while len(list(Path(where).iterdir())) < int(count) and time.monotonic() < deadline:
            time.sleep(0.01)
"""


def _suite(tmp: Path, fleet: Fleet, cells: str, port: int) -> Path:
    """The leader's directory (spec, job file naming both followers, conftest) and one copy
    of it per follower, its `chdir`."""
    leader = tmp / "leader"
    leader.mkdir()
    (leader / "bench_tiny.yaml").write_text(f"name: tiny\ndefaults: {{{FAST}}}\n"
                                            f"benchmarks:\n{cells}")
    (leader / "conftest.py").write_text(CONFTEST)
    (leader / "job.yaml").write_text(
        f"name: fleet\nfollowers:\n"
        f"  - {{host: {fleet.host['ssh']}, via: ssh, address: follower-ssh, "
        f"ssh_config: {fleet.ssh_config}, python: {VENV_PYTHON}, chdir: {tmp}/copy-ssh}}\n"
        f"  - {{host: {fleet.host['sock']}, via: socket, address: '{fleet.ip['sock']}:{port}', "
        f"chdir: {tmp}/copy-sock, trusted_network: true}}\n")    # a namespace this test made
    for kind in ("ssh", "sock"):
        shutil.copytree(leader, tmp / f"copy-{kind}")
    return leader


def _leader(leader: Path, *extra, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [VENV_PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "bench_tiny.yaml",
         "--infer-config", "job.yaml", "--infer-json", "run.json", "--infer-no-html", *extra],
        cwd=leader, stdout=open(leader / "out.txt", "w"), stderr=subprocess.STDOUT,
        env=None if env is None else {**os.environ, **env})


def _finish(proc: subprocess.Popen, leader: Path, timeout=150) -> tuple[int, str, dict]:
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        pytest.fail(f"the leader hung:\n{(leader / 'out.txt').read_text()[-4000:]}")
    out = (leader / "out.txt").read_text()
    run = leader / "run.json"
    return rc, out, json.loads(run.read_text()) if run.exists() else {}


def _ran_where(tmp: Path) -> dict[str, set]:
    """nodeid -> network namespace inodes of the processes that ran it (any copy)."""
    where: dict[str, set] = {}
    for kind in ("ssh", "sock"):
        path = tmp / f"copy-{kind}" / "ran-here.txt"
        for line in path.read_text().splitlines() if path.exists() else ():
            nodeid, inode = line.split("\t")
            where.setdefault(nodeid, set()).add(int(inode))
    return where


def _no_overlap_per_host(results):
    by_host: dict[str, list] = {}
    for r in results:
        by_host.setdefault(r["placement"]["follower"], []).append(
            (r["window"]["start"], r["window"]["end"], r["id"]))
    for host, windows in by_host.items():
        windows.sort()
        for a, b in zip(windows, windows[1:]):
            assert b[0] >= a[1], f"{host}: {a[2]} and {b[2]} measured at the same time"
    return by_host


def test_cells_run_on_an_ssh_and_a_socket_follower_in_other_namespaces(fleet, tmp_path):
    leader = _suite(tmp_path, fleet, "  - {model: mlp-tiny, runtime: torch, "
                                     "batch_size: [1, 2, 4, 8, 16, 32]}\n", 8888)
    rc, out, doc = _finish(_leader(leader), leader)
    assert rc == 0, out[-4000:]
    results = doc["results"]
    assert len(results) == 6 and all(r["status"] == "passed" for r in results), out[-3000:]
    ssh, sock = fleet.host["ssh"], fleet.host["sock"]
    netns = {host: os.stat(f"/run/netns/{fleet.ns[kind]}").st_ino
             for kind, host in fleet.host.items()}
    where = _ran_where(tmp_path)
    for r in results:
        # the follower a result names is the namespace its process really ran in
        assert where[r["id"]] == {netns[r["placement"]["follower"]]}, r["placement"]
    by_host = _no_overlap_per_host(results)
    assert set(by_host) == {ssh, sock}                   # both followers got work
    # over ssh, through the namespace's sshd, with the generated key
    assert f"Accepted publickey for root from 10.213.{fleet.net}.1" in \
        (fleet.tmp / "sshd.log").read_text()
    # what each follower said about itself, in the run file
    for kind, host in fleet.host.items():
        facts = doc["followers"][host]["facts"]
        assert facts["cwd"] == str(tmp_path / f"copy-{kind}")
        assert facts["logical_cores"] == os.cpu_count()
        assert facts["python_executable"] == VENV_PYTHON
    assert doc["followers"][ssh]["inventory"]["via"] == "ssh"


def _holder(path: Path) -> str | None:
    """The cell holding the lease file right now (its `who`), or None when it is free."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as f:                  # closing drops a lock we got
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            pass
        try:                                  # written just after the lock was taken
            return json.loads(f.read())["who"] or None
        except (ValueError, KeyError):
            return None


def test_a_follower_killed_mid_cell_loses_nothing_measured(fleet, tmp_path):
    port = 8889                              # a server of its own: this test kills it
    server = fleet.start_socket_server(port)
    # ten cells: the socket follower gets a second one even when its worker starts seconds
    # after the ssh one (with six, CI once saw the ssh follower take all but one)
    leader = _suite(tmp_path, fleet, "  - {model: mlp-tiny, runtime: torch, batch_size: "
                                     "[1, 2, 3, 4, 6, 8, 12, 16, 24, 32], min_duration: 0.6s, "
                                     "max_duration: 0.8s}\n", port)
    proc = _leader(leader)
    lease = fleet.lease_dir / f"{fleet.host['sock']}__cpu.lock"
    # wait for the socket follower's second cell (one measured there already), then kill
    # the server process, which is the worker's process too. The cell holding the lease is
    # the one its file names: a worker may release it and take it for its next cell between
    # two polls (seen: four cells back to back, never seen free); a name counts once read
    # twice in a row (just after a lock is taken, the file still names the cell before)
    seen, deadline, victim, last = set(), time.monotonic() + 90, None, None
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        holder = _holder(lease)
        if holder is not None and holder == last:
            seen.add(holder)
            if len(seen) >= 2:
                time.sleep(0.1)              # inside the measured window, not at its edge
                if _holder(lease) == holder:
                    victim = holder
                    os.kill(server.pid, signal.SIGKILL)
        last = holder
        time.sleep(0.02)
    rc, out, doc = _finish(proc, leader)
    assert victim is not None, f"the socket follower never ran a second cell:\n{out[-3000:]}"
    ssh, sock = fleet.host["ssh"], fleet.host["sock"]
    assert rc == 0, out[-4000:]
    # (refused, or reset when the replacement connects while the killed server's socket
    # is still closing)
    assert f"follower {sock} is gone: its worker crashed and a new one could not start (" \
        in out and "INTERNALERROR" not in out
    results = {r["id"]: r for r in doc["results"]}
    assert len(results) == len(doc["results"]) == 10          # each cell once, none lost
    assert all(r["status"] == "passed" for r in results.values())
    # run again once, on the other follower; what the killed one measured before is kept
    assert results[victim]["placement"]["follower"] == ssh
    assert any(r["placement"]["follower"] == sock for r in results.values())
    assert "1 rerun" in out


def test_two_sessions_sharing_followers_never_measure_at_once_on_one(fleet, tmp_path):
    # an execnet socket server serves one connection at a time: one port per session, the
    # same follower host (the same namespace, lease directory and host name) behind both
    cells = ("  - {model: mlp-tiny, runtime: torch, batch_size: [1, 2, 4, 8, 16, 32], "
             "min_duration: 1s, max_duration: 1.5s}\n")
    start_line = tmp_path / "start-line"
    start_line.mkdir()
    leaders = []
    for name, port in (("a", 8890), ("b", 8891)):
        fleet.start_socket_server(port)
        (tmp_path / name).mkdir()
        leaders.append(_suite(tmp_path / name, fleet, cells, port))
    # both leaders wait at a start line before their workers start: start-up skew (seen: 6 s
    # on a loaded CI machine) must not serialise them
    procs = [_leader(leader, env={"TEST_START_LINE": f"{start_line}:{name}:2"})
             for name, leader in zip("ab", leaders)]
    docs = []
    for proc, leader in zip(procs, leaders):
        rc, out, doc = _finish(proc, leader)
        assert rc == 0, out[-4000:]
        docs.append(doc)
    results = [r for doc in docs for r in doc["results"]]
    assert len(results) == 12 and all(r["status"] == "passed" for r in results)
    by_host = _no_overlap_per_host(results)       # across both sessions' run files
    assert set(by_host) == set(fleet.host.values())
    # The start line had both sessions' workers ready at once; leases are not granted in
    # order, so one session may measure all its cells before the other (seen in CI). What
    # proves the hosts were shared: the cell that waited longest for its lease waited while
    # a cell of the other session measured on its host (one session alone never waits: its
    # scheduler gives a host one cell at a time). Its wait began at most `began`: its own
    # model set-up and warm-up also came after the lease and before its window.
    r = max(results, key=lambda r: r["placement"]["lease_wait_s"])
    assert r["placement"]["lease_wait_s"] > 0.5, [q["placement"] for q in results]
    began = r["window"]["start"] - r["placement"]["lease_wait_s"]
    other = docs[1] if r in docs[0]["results"] else docs[0]
    assert any(o["placement"]["follower"] == r["placement"]["follower"]
               and o["window"]["end"] > began and o["window"]["start"] < r["window"]["start"]
               for o in other["results"]), (r["id"], r["placement"], began)
