"""The baseline side of a paired cell in another process: another interpreter (a venv with
other library versions) or another git revision of the files under test.

An execnet popen gateway starts the interpreter (`python:`, or this one for `git:`); the
remote end loads the same cell with this harness's code (pinned by path, so both sides are
measured by the same loop) and then serves "measure for s seconds" requests over the channel,
returning the latencies as bytes. While the remote side measures, this process waits on the
channel, so the sides never run at the same time.

`git: REV`: the revision's tracked files are exported (`git archive`, read-only: the user's
repository is not touched) into a temporary directory; the remote process runs there, with
that directory first on sys.path, and model files under the repository are read from there.
So factories and model files come from REV, the measuring harness from this session.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from array import array
from pathlib import Path

from ..runtimes.base import require
from ..workload.failures import ErrorLog

HARNESS = Path(__file__).resolve().parents[1]      # the pytest_inferbench package directory
START_TIMEOUT_S = 300.0
PROCESS_ENV = "INFERBENCH_PROCESS"   # "k/N" in a fresh measuring process, for the user's code


class RemoteError(RuntimeError):
    pass


def _remote_main(channel, harness, sys_path, cell_json, cache_root, chdir, env=None):
    """Runs in the remote interpreter (execnet sends this function's source): load the harness
    from this session's package directory (pinned by path), then serve the side
    (run/remote_worker.py) over the channel."""
    import importlib
    import importlib.util
    import json
    import os
    import sys
    os.environ.update(env or {})
    if chdir:
        os.chdir(chdir)
    for p in reversed(sys_path):
        sys.path.insert(0, p)
    try:
        spec = importlib.util.spec_from_file_location(
            "pytest_inferbench", os.path.join(harness, "__init__.py"),
            submodule_search_locations=[harness])
        module = importlib.util.module_from_spec(spec)
        sys.modules["pytest_inferbench"] = module
        spec.loader.exec_module(module)
        worker = importlib.import_module("pytest_inferbench.run.remote_worker")
    except BaseException as exc:  # noqa: BLE001 - reported to the caller as one line
        channel.send(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return
    worker.serve(channel, cell_json, cache_root)


class RemoteSide:
    """The LocalSide interface (warm, run, info, describe, close) over an execnet channel.
    role: which side this is, for messages; env: variables set in the remote before loading
    (a fresh process's INFERBENCH_PROCESS)."""

    def __init__(self, cell, cache, python: str | None = None, git: str | None = None,
                 rootdir=None, role: str = "baseline", env: dict | None = None):
        execnet = require("execnet", "pip install execnet (it comes with pytest-xdist)")
        self.batch_size = cell.batch_size
        self.errors = ErrorLog()
        self.tmp = None
        self.gateway = None
        interpreter = python or sys.executable
        sys_path = user_paths()
        chdir = os.getcwd()
        if git is not None:
            repo, tree = _export_revision(git, Path(rootdir or os.getcwd()))
            self.tmp = tree.parent
            cell = _rebase(cell, repo, tree)
            sys_path = [str(_rebase_path(p, repo, tree)) for p in sys_path]
            sys_path.insert(0, str(tree))
            chdir = str(_rebase_path(chdir, repo, tree))
        self.where = f"{role} in python {interpreter}" + (f", git {git}" if git else "")
        try:
            self.gateway = execnet.makegateway(f"popen//python={interpreter}")
            self.channel = self.gateway.remote_exec(
                _remote_main, harness=str(HARNESS), sys_path=sys_path,
                cell_json=json.dumps(cell.model_dump(mode="json")),
                cache_root=str(cache.root), chdir=chdir, env=dict(env or {}))
            reply = json.loads(self.channel.receive(START_TIMEOUT_S))
        except Exception as exc:
            self.close()
            raise RemoteError(f"{self.where}: could not start: "
                              f"{type(exc).__name__}: {exc}") from None
        if not reply.get("ok"):
            self.close()
            raise RemoteError(f"{self.where}: {reply.get('error')}")
        self._info = reply["info"]
        self._described = reply.get("described") or {}

    def warm(self, warmup) -> None:
        self.channel.send(("warm", warmup))
        self.channel.receive()

    def run(self, seconds: float, out: array) -> int:
        self.channel.send(("run", seconds))
        data, busy, errors = self.channel.receive()
        out.frombytes(data)
        self.errors.merge_json(json.loads(errors))
        return busy

    def info(self) -> dict:
        return self._info

    def describe(self, result) -> None:
        """The result's runtime and model sections, as the remote side's runner gave them."""
        for name, value in self._described.items():
            setattr(result, name, value)

    def close(self) -> None:
        if self.gateway is not None:
            try:
                if not self.channel.isclosed():
                    self.channel.send(("close",))
                    self.channel.receive(30)
            except Exception:  # noqa: BLE001 - the remote may be gone already
                pass
            self.gateway.exit()
            self.gateway = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def user_paths() -> list[str]:
    """This process's sys.path entries outside the interpreter's own tree (where spec
    factories live), for the remote process to find the same modules."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    out = []
    for p in [os.getcwd(), *sys.path]:
        if not p or not os.path.isdir(p):
            continue
        real = os.path.realpath(p)
        if any(real == x or real.startswith(x + os.sep) for x in prefixes):
            continue
        if real not in out:
            out.append(real)
    return out


def _export_revision(rev: str, start: Path) -> tuple[Path, Path]:
    """(repository top level, a temporary directory holding REV's tracked files)."""
    def git(*args, **kw):
        return subprocess.run(["git", *args], cwd=start, capture_output=True, timeout=120, **kw)
    top = git("rev-parse", "--show-toplevel", text=True)
    if top.returncode != 0:
        raise RemoteError(f"baseline git {rev}: {start} is not in a git repository "
                          f"({top.stderr.strip()})")
    repo = Path(top.stdout.strip()).resolve()
    commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", text=True)
    if commit.returncode != 0:
        raise RemoteError(f"baseline git {rev}: no such revision in {repo}")
    tar = git("archive", "--format=tar", commit.stdout.strip())
    if tar.returncode != 0:
        raise RemoteError(f"baseline git {rev}: git archive failed: "
                          f"{tar.stderr.decode(errors='replace').strip()}")
    tmp = Path(tempfile.mkdtemp(prefix="inferbench-git-"))
    tree = tmp / "tree"
    tree.mkdir()
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as archive:
        if hasattr(tarfile, "data_filter"):     # Python >= 3.11.4 / 3.12
            archive.extractall(tree, filter="data")
        else:                                   # the user's own repository: trusted
            archive.extractall(tree)
    return repo, tree


def _rebase_path(path, repo: Path, tree: Path) -> Path:
    p = Path(path).resolve()
    try:
        return tree / p.relative_to(repo)
    except ValueError:
        return p


def _rebase(cell, repo: Path, tree: Path):
    """The cell with model files under the repository read from the exported revision."""
    model = cell.model
    if getattr(model, "kind", None) == "file":
        moved = _rebase_path(model.path, repo, tree)
        if not moved.exists():
            raise RemoteError(f"model file {model.path} does not exist at that revision")
        model = model.model_copy(update={"path": str(moved)})
    return cell.model_copy(update={"model": model})
