"""The results store end to end: real sessions recording into SQLite and a real PostgreSQL
(a throwaway cluster started here), at the same time; history verdicts through pytest; the
`store import` and `history` commands; a store that cannot be used never costs the run file.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pytest_inferbench.store.db import ResultStore, StoreError
from pytest_inferbench.store.url import resolve_url, shown

SPIN = '''
import os, time
import torch

class Spin(torch.nn.Module):
    """Busy-waits a fixed time per query: its work is scaled by a known factor."""
    def __init__(self, us):
        super().__init__()
        self.s = us * 1e-6
    def forward(self, x):
        end = time.perf_counter() + self.s
        while time.perf_counter() < end:
            pass
        return x * 2.0

def current():
    return Spin(400 * float(os.environ.get("SPIN_FACTOR", "1"))), {"x": [4]}
'''

SPEC = """
name: h
defaults: {warmup: 3, min_duration: 0.1s, max_duration: 0.3s, min_queries: 20}
benchmarks:
  - model: "spinmods:current"
    runtime: torch
    batch_size: [1, 2]
    gate: {p50: "+10%"}
"""


def _suite(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "spinmods.py").write_text(SPIN)
    (where / "bench_h.yaml").write_text(SPEC)
    return where


def _pytest(where: Path, *args, factor=1.0, wait=True):
    env = {**os.environ, "SPIN_FACTOR": str(factor), "PYTHONPATH": str(where)}
    env.pop("INFERBENCH_STORE", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--infer-no-html",
           "--infer-no-progress", "bench_h.yaml", *args]
    proc = subprocess.Popen(cmd, cwd=where, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return _done(proc) if wait else proc


def _done(proc):
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def _cli(where: Path, *args):
    proc = subprocess.run([sys.executable, "-m", "pytest_inferbench", *args], cwd=where,
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "INFERBENCH_STORE"})
    return proc.returncode, proc.stdout + proc.stderr


def _run_files(where: Path) -> list[dict]:
    return [json.loads(p.read_text())
            for p in sorted((where / ".inferbench/runs").glob("*.json"))]


def _ids(doc) -> list:
    return sorted((r["id"], r["latency_ms"]["n"]) for r in doc["results"])


def _two_sessions_at_once(tmp_path: Path, url: str) -> list[dict]:
    sides = [_suite(tmp_path / name) for name in ("a", "b")]
    procs = [_pytest(side, "--infer-store", url, wait=False) for side in sides]
    for proc in procs:
        rc, out = _done(proc)
        assert rc == 0, out[-3000:]
        assert "results store: " in out and "(run " in out, out[-2000:]
    docs = [d for side in sides for d in _run_files(side)]
    spans = [(min(r["window"]["start"] for r in d["results"]),
              max(r["window"]["end"] for r in d["results"])) for d in docs]
    store = ResultStore.open(resolve_url(url, tmp_path))
    try:
        stored = store.documents()
    finally:
        store.close()
    assert len(stored) == 2
    # every result of both run files is in the store, unchanged
    assert sorted(map(_ids, stored)) == sorted(map(_ids, docs))
    return spans


# ----------------------------------------------------------------------------- SQLite

def test_two_sessions_recording_into_one_sqlite_store_lose_nothing(tmp_path):
    # a URL, not a path: pytest takes an existing path on the command line into its rootdir
    _two_sessions_at_once(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}")


def _writer(path, who, n):
    store = ResultStore.open(f"sqlite:///{path}")
    for i in range(n):
        store.record({"name": f"{who}-{i}", "provenance": {"host": who, "start_time": f"{i}"},
                      "results": [{"id": f"t{j}", "status": "passed",
                                   "latency_ms": {"n": 10, "mean": 1.0}} for j in range(3)]})
    store.close()


def test_two_processes_writing_at_once_into_sqlite_lose_nothing(tmp_path):
    import multiprocessing
    path = tmp_path / "stress.db"
    ResultStore.open(f"sqlite:///{path}").close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, who, 30)) for who in ("x", "y")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = ResultStore.open(f"sqlite:///{path}")
    assert store.counts() == (60, 180)
    store.close()


# ----------------------------------------------------------------------------- PostgreSQL

def _postgres_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root: initdb and pg_ctl run as the postgres user (runuser)"
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "Debian's postgresql is not installed: apt-get install postgresql"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'pytest-inferbench[postgres]'"
    return None


@pytest.fixture(scope="module")
def postgres():
    missing = _postgres_missing()
    if missing:
        pytest.skip(missing)
    bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="inferbench-pg-"))
    shutil.chown(data, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust",
                    "-U", "postgres"], check=True, capture_output=True, timeout=120)
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l",
                    str(data / "log"), "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                    "-w", "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m",
                        "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def test_two_sessions_recording_into_postgresql_at_once_lose_nothing(postgres, tmp_path):
    spans = _two_sessions_at_once(tmp_path, postgres)
    # they did overlap, or this proved nothing about concurrency
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans


def test_two_first_opens_of_an_empty_postgresql_do_not_race_on_the_schema(postgres):
    import psycopg
    with psycopg.connect(postgres.replace("postgresql://", "postgresql://", 1),
                         autocommit=True) as conn:
        conn.execute("CREATE DATABASE fresh")
    url = postgres.rsplit("/", 1)[0] + "/fresh"
    code = ("import sys; from pytest_inferbench.store.db import ResultStore; "
            f"s = ResultStore.open({resolve_url(url, Path('.'))!r}); print(s.counts())")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all("(0, 0)" in o for o in outs), outs


# ----------------------------------------------------------------------------- errors

def test_a_store_that_cannot_be_reached_is_one_warning_and_the_run_file_is_written(tmp_path):
    where = _suite(tmp_path / "s")
    rc, out = _pytest(where, "--infer-store", "postgresql://nobody:secret@127.0.0.1:9/x")
    assert rc == 0, out[-3000:]
    lines = [line for line in out.splitlines() if "results store" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: results store "), lines
    assert "secret" not in out and "***" in lines[0]
    assert "store import" in lines[0] and "Traceback" not in out
    (doc,) = _run_files(where)
    assert len(doc["results"]) == 2


def test_a_store_from_a_newer_version_is_refused_with_one_line(tmp_path):
    path = tmp_path / "new.db"
    ResultStore.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE inferbench_schema SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99, written by a newer"):
        ResultStore.open(f"sqlite:///{path}")
    where = _suite(tmp_path / "s")
    rc, out = _pytest(where, "--infer-store", f"sqlite:///{path}")
    assert rc == 0 and "newer pytest-inferbench" in out and "Traceback" not in out
    assert len(_run_files(where)) == 1


def test_history_without_a_store_is_a_usage_error(tmp_path):
    where = _suite(tmp_path / "s")
    rc, out = _pytest(where, "--infer-baseline", "history", "--infer-store", "none")
    assert rc == 4 and "needs the results store" in out and "Traceback" not in out


def test_urls_and_paths():
    root = Path("/r")
    assert resolve_url(None, root) == "sqlite:////r/.inferbench/results.db"
    assert resolve_url("none", root) is None and resolve_url("OFF", root) is None
    assert resolve_url("x/y.db", root) == "sqlite:////r/x/y.db"
    assert resolve_url("postgresql://u@h/db", root) == "postgresql+psycopg://u@h/db"
    assert resolve_url("sqlite:///abs.db", root) == "sqlite:///abs.db"
    assert shown("postgresql+psycopg://u:pw@h/db") == "postgresql+psycopg://u:***@h/db"
    with pytest.raises(StoreError, match="not a database URL"):
        ResultStore.open("nosuchdb://x")


# ----------------------------------------------------------------------------- history

def test_history_gates_a_slowdown_end_to_end(tmp_path):
    where = _suite(tmp_path / "h")
    for i in range(5):
        rc, out = _pytest(where, "--infer-baseline", "history")
        assert rc == 0, out[-3000:]
        if i == 0:
            assert "history mode needs at least 5 (5 more)" in out, out[-2000:]
    rc, out = _pytest(where, "--infer-baseline", "history")
    assert rc == 0 and "REGRESSION" not in out, out[-3000:]
    assert "noise learnt from 5 earlier runs" in json.dumps(_run_files(where)[-1]["comparison"])
    rc, out = _pytest(where, "--infer-baseline", "history", factor=1.6)
    assert rc == 1, out[-3000:]
    assert "REGRESSION [history] bench_h.yaml::current[torch-cpu-fp32-bs1-offline]" in out
    last = _run_files(where)[-1]
    assert len(last["results"]) == 2 and last["comparison"]["failed"]
    # the history command finds the newest run's regression: exit 1, naming the cell
    rc, out = _cli(where, "history", "--cell", "bs1", "--json", "series.json")
    assert rc == 1, out
    assert "bench_h.yaml::current[torch-cpu-fp32-bs1-offline]" in out and "bs2" not in out
    assert "newest run: p50 REGRESSION" in out
    (series,) = json.loads((where / "series.json").read_text())
    assert len(series["runs"]) == 7
    # the same runs imported again add nothing
    rc, out = _cli(where, "store", "import", ".inferbench/runs")
    assert rc == 0 and out.startswith("0 runs added (0 results), 7 already in"), out
    # a run from another machine is not this machine's history: said in one note
    other = _run_files(where)[0]
    other["provenance"]["cpu_model"] = "Another CPU"
    other["provenance"]["start_time"] = "2020-01-01T00:00:00+00:00"
    (where / "other.json").write_text(json.dumps(other))
    rc, out = _cli(where, "store", "import", "other.json")
    assert rc == 0 and out.startswith("1 run added (2 results)"), out
    rc, out = _cli(where, "history", "--cell", "bs1")
    assert "Another CPU x" in out and out.count("bench_h.yaml::current[torch-cpu-fp32-bs1") == 2
    fresh = _suite(tmp_path / "fresh")
    shutil.copy(where / ".inferbench/results.db", tmp_path / "copy.db")
    with sqlite3.connect(tmp_path / "copy.db") as db:     # only the other machine's run left
        db.execute("DELETE FROM inferbench_results WHERE run_id IN (SELECT id FROM "
                   "inferbench_runs WHERE machine NOT LIKE '%Another CPU%')")
    rc, out = _pytest(fresh, "--infer-baseline", "history", "--infer-store",
                      f"sqlite:///{tmp_path / 'copy.db'}")
    assert rc == 0, out[-3000:]
    assert "note: 2 cells also ran on other machines or library versions" in out, out[-3000:]


def test_store_import_and_load_results(tmp_path):
    import pytest_inferbench
    where = _suite(tmp_path / "i")
    rc, out = _pytest(where, "--infer-store", "none")
    assert rc == 0 and "results store" not in out
    assert not (where / ".inferbench/results.db").exists()
    url = f"sqlite:///{tmp_path / 'team.db'}"
    rc, out = _cli(where, "store", "import", ".inferbench/runs", "--store", url)
    assert rc == 0 and out.startswith("1 run added (2 results), 0 already"), out
    df = pytest_inferbench.load_results(url)
    (doc,) = _run_files(where)
    assert sorted(df["id"]) == sorted(r["id"] for r in doc["results"])
    assert sorted(df["p50_ms"].round(9)) == sorted(
        round(r["latency_ms"]["percentiles"]["p50"]["value"], 9) for r in doc["results"])
    rc, out = _cli(where, "store", "import", "nothing-here")
    assert rc == 2 and "nothing-here: no such file or directory" in out
