"""Leader vs follower file contents: a follower runs the plugin on its own copy of the user's
files (its `chdir`), so before xdist starts a worker there the leader compares the sha256 of
every spec file, job file, followers file, model file and trace file the session's cells come
from with the follower's copy (same path relative to rootdir, relative to its chdir there).

A difference or a missing file refuses the follower: the session stops with a usage error
(exit 4) before any cell runs, naming the follower, each file and both short hashes. Why not
run elsewhere, or fail only those cells: a stale copy measures another benchmark under the
same cell id (numbers that look comparable and are not), and quietly dropping a follower
changes the fleet under the user's feet; a fleet whose copies differ is a setup mistake that
one message and a copy fix, as xdist stops on workers that collect different tests.

The file list is built on the leader the way collection finds specs (the command line's
paths, inferbench_spec_patterns, norecursedirs), then the cells of those specs name their
model and trace files. The follower's side (`hash_here`) is an execnet pure function.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from pathlib import Path

import pytest

from ..core.errors import SpecError
from ..spec import FileModel, load_spec

HASHES_KEY = pytest.StashKey[dict]()
SHORT = 12


def sha256_of(path) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def hash_here(channel, paths):
    """On the follower (execnet pure function): sha256 (or None: missing) of each path,
    relative ones under the current directory (the follower's chdir)."""
    import hashlib
    import os
    out = {}
    for p in paths:
        try:
            h = hashlib.sha256()
            with open(p if os.path.isabs(p) else os.path.join(os.getcwd(), p), "rb") as f:
                block = f.read(1 << 20)
                while block:            # (no lambda: a pure function has no closures)
                    h.update(block)
                    block = f.read(1 << 20)
            out[p] = h.hexdigest()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            out[p] = None
    channel.send(out)


def _key(path: Path, root: Path) -> str:
    """The path as the follower finds it: relative to rootdir (its chdir), else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def spec_files(config) -> list[Path]:
    """Spec files the session collects from the command line's paths (as collection does:
    inferbench_spec_patterns, no dot directories, no norecursedirs), plus the job file."""
    patterns = config.getini("inferbench_spec_patterns")
    skip = config.getini("norecursedirs")
    found: list[Path] = []
    for arg in config.args:
        path = Path(config.invocation_params.dir, str(arg).split("::")[0])
        if path.is_file():
            if path.suffix in (".yaml", ".yml"):
                found.append(path)
        elif path.is_dir():
            for top, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                                 and not any(fnmatch.fnmatch(d, p) for p in skip))
                found += [Path(top, f) for f in sorted(files)
                          if any(fnmatch.fnmatch(f, p) for p in patterns)]
    return list(dict.fromkeys(p.resolve() for p in found))


def session_files(config, job=None, followers_file=None) -> dict[str, str]:
    """Leader: {path as the follower finds it: sha256} of the files the cells come from."""
    root = config.rootpath.resolve()
    files: list[Path] = spec_files(config)
    if job is not None:
        files.append(Path(job.path))
    if followers_file:
        files.append(Path(config.invocation_params.dir, followers_file))
    for spec in list(files):
        if job is not None and spec.resolve() == Path(job.path).resolve() \
                and not job.has_benchmarks:
            continue
        try:
            cells = load_spec(spec, job=job, rootdir=root)
        except (SpecError, OSError):
            continue                      # collection reports a broken spec itself
        for cell in cells:
            if isinstance(cell.model, FileModel):
                files.append(Path(cell.model.path))
            if cell.workload.trace:
                files.append(Path(cell.workload.trace))
    out = {}
    for path in files:
        digest = sha256_of(path)
        if digest is not None:
            out[_key(path, root)] = digest
    return out


def differences(leader: dict, follower: dict) -> list[str]:
    problems = []
    for path, digest in sorted(leader.items()):
        theirs = follower.get(path)
        if theirs is None:
            problems.append(f"{path} is missing there (leader {digest[:SHORT]})")
        elif theirs != digest:
            problems.append(f"{path} differs (leader {digest[:SHORT]}, follower "
                            f"{theirs[:SHORT]})")
    return problems


def check_node(node, follower, job=None, followers_file=None) -> None:
    """pytest_configure_node: compare the leader's files with the node's follower's copy
    (once per follower); a difference stops the session (pytest.UsageError)."""
    if follower.via == "local" and not follower.chdir:
        return                            # the leader's own files
    config = node.config
    cache = config.stash.setdefault(HASHES_KEY, {})
    if "leader" not in cache:
        cache["leader"] = session_files(config, job, followers_file)
    leader = cache["leader"]
    if follower.host not in cache:
        channel = node.gateway.remote_exec(hash_here, paths=sorted(leader))
        theirs = channel.receive(timeout=600)
        channel.waitclose(timeout=30)
        cache[follower.host] = differences(leader, theirs)
    problems = cache[follower.host]
    if problems:
        where = follower.chdir or "its working directory"
        address = (follower.address or follower.host).rpartition(":")[0] \
            if follower.via == "socket" else (follower.address or follower.host)
        raise pytest.UsageError(
            f"inferbench: follower {follower.host} ({where}) does not have the leader's "
            f"files: {'; '.join(problems)}. Copy them there (e.g. rsync -a ./ "
            f"{address}:{follower.chdir or '.'}/) or point its "
            f"`chdir` at an up-to-date copy")
