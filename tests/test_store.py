"""The results store: real sessions recording into one SQLite file and one PostgreSQL
database at the same time (nothing lost), processes recording at once, concurrent first opens
of an empty database, a store that cannot be used (one warning, the run file still written),
`store import` (idempotent, also against what the sessions recorded), and resolving URLs."""

import glob
import json
import multiprocessing
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from spin_models import SPIN

from pytest_inferbench.__main__ import main as cli
from pytest_inferbench.results.runfile import load_run
from pytest_inferbench.store.db import ResultStore, StoreError
from pytest_inferbench.store.schema import SCHEMA_VERSION
from pytest_inferbench.store.url import resolve_url, run_uid, shown

# two cells, so that a run has more than one result to lose
STORED = """
name: g
defaults: {warmup: 3, min_duration: 0.1s, max_duration: 0.3s, min_queries: 20}
benchmarks:
  - model: "spinmods:current"
    runtime: python
  - model: "spinmods:other"
    runtime: python
"""

SESSION_ARGS = ["-p", "no:cacheprovider", "--infer-no-html", "--infer-no-progress"]


def _project(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "pytest.ini").write_text("[pytest]\n")
    (where / "spinmods.py").write_text(SPIN)
    (where / "bench_g.yaml").write_text(STORED)
    return where


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("INFERBENCH_STORE", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    return {**env, "SPIN_FACTOR": "1", **extra}


def _concurrent_sessions(dirs, store_arg, timeout=240):
    """Start one real pytest session per directory at once, all naming the same store."""
    procs = [subprocess.Popen([sys.executable, "-m", "pytest", *SESSION_ARGS,
                               "--infer-store", store_arg], cwd=d, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for d in dirs]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        outs.append((p.returncode, out))
    return outs


def _run_files(where: Path) -> list[Path]:
    return sorted((where / ".inferbench" / "runs").glob("*.json"))


def _check_sessions_landed_whole(outs, dirs, url):
    for (ret, out), d in zip(outs, dirs):
        assert ret == 0, out
        assert "warning" not in out, out
        assert f"results store: {shown(url)} (run " in out and ", 2 results)" in out, out
        assert len(_run_files(d)) == 1
    store = ResultStore.open(url)
    try:
        docs = store.documents()
        assert store.counts() == (2, 4)
    finally:
        store.close()
    assert len(docs) == 2
    by_uid = {run_uid(d): d for d in docs}
    assert len(by_uid) == 2
    run_ids = set()
    for d in dirs:
        (path,) = _run_files(d)
        written = json.loads(path.read_text())
        stored = by_uid[run_uid(written)]
        assert len(written["results"]) == 2
        assert stored["results"] == written["results"]        # every field of every result
        assert stored["provenance"] == written["provenance"]
        assert stored["name"] == written["name"]
        run_ids.add(stored["store_run"])
        ret_line = next(line for line in outs[dirs.index(d)][1].splitlines()
                        if line.startswith("results store: "))
        assert f"(run {stored['store_run']}, 2 results)" in ret_line
    assert run_ids == {1, 2}


# ----------------------------------------------------------------------------- SQLite

@pytest.fixture(scope="module")
def sqlite_sessions(tmp_path_factory):
    """Two real sessions, started together, recording into one SQLite file."""
    root = tmp_path_factory.mktemp("sqlite-sessions")
    dirs = [_project(root / "a"), _project(root / "b")]
    db = root / "shared" / "results.db"
    outs = _concurrent_sessions(dirs, str(db))
    return dirs, f"sqlite:///{db}", outs


def test_two_sessions_at_once_both_land_whole_in_sqlite(sqlite_sessions):
    dirs, url, outs = sqlite_sessions
    _check_sessions_landed_whole(outs, dirs, url)


def _synthetic_doc(worker: int, i: int) -> dict:
    start = f"2026-01-01T{worker:02d}:{i // 60:02d}:{i % 60:02d}+00:00"
    results = []
    for cell in ("c1", "c2"):
        v = 1.0 + worker + i / 100
        results.append({
            "id": f"bench_s.yaml::{cell}", "status": "passed", "valid": True, "repeat": 1,
            "cell": {"spec": "bench_s.yaml", "id": cell, "runtime": "torch",
                     "model": {"name": cell}},
            "window": {"start": start},
            "latency_ms": {"n": 10, "mean": v, "percentiles": {"p50": {"value": v}}},
            "throughput": {"samples_per_s": 1000 / v}})
    return {"format": "pytest-inferbench-run", "version": 1, "name": f"w{worker}-{i}",
            "provenance": {"start_time": start, "host": f"host{worker}",
                           "cpu_model": "Test CPU", "cpu_count_logical": 2,
                           "git": {"branch": "main" if worker == 0 else "dev",
                                   "commit": f"{worker}{i:039d}"}},
            "results": results}


def _record_many(url, worker, n, go, errors):
    """A process that opens the store (maybe the first to) and records n runs, one by one."""
    try:
        go.wait(60)
        store = ResultStore.open(url)
        try:
            for i in range(n):
                done = store.record(_synthetic_doc(worker, i))
                assert done.added and done.results == 2
        finally:
            store.close()
    except BaseException as exc:   # reported to the parent
        errors.put(f"worker {worker}: {type(exc).__name__}: {exc}")
        raise


def test_two_processes_recording_at_once_lose_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'new' / 'stress.db'}"        # not there yet: both create it
    ctx = multiprocessing.get_context("spawn")
    go, errors = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_record_many, args=(url, w, 30, go, errors)) for w in (0, 1)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(180)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert [p.exitcode for p in procs] == [0, 0], problems
    store = ResultStore.open(url)
    try:
        assert store.counts() == (60, 120)
        docs = store.documents()
        assert sorted(d["name"] for d in docs) == sorted(f"w{w}-{i}" for w in (0, 1)
                                                         for i in range(30))
        for d in docs:
            w, i = map(int, d["name"][1:].split("-"))
            assert d["results"] == _synthetic_doc(w, i)["results"]
        rows = store.series()
        assert len(rows) == 120
        assert [r["started_at"] for r in rows] == sorted(r["started_at"] for r in rows)
    finally:
        store.close()


def test_record_is_idempotent_and_series_filters(tmp_path):
    store = ResultStore.open(f"sqlite:///{tmp_path / 's.db'}")
    try:
        first = store.record(_synthetic_doc(0, 1), source="a.json", recorded_at="now")
        again = store.record(_synthetic_doc(0, 1))
        assert first.added and not again.added and first.run_id == again.run_id
        assert store.counts() == (1, 2)
        store.record(_synthetic_doc(1, 2))
        store.record(_synthetic_doc(0, 3))
        assert store.counts() == (3, 6)
        rows = store.series()
        keys = sorted({r["cell_key"] for r in rows})
        assert len(keys) == 2
        one = store.series(cell_keys=[keys[0]])
        assert len(one) == 3 and {r["cell_key"] for r in one} == {keys[0]}
        assert [r["run_name"] for r in one] == ["w0-1", "w0-3", "w1-2"]   # oldest first
        assert [r["run_name"] for r in store.series(cell_keys=[keys[0]], branch="dev")] == \
            ["w1-2"]
        assert [r["run_name"] for r in store.series(cell_keys=[keys[0]],
                                                    since="2026-01-01T01")] == ["w1-2"]
        assert store.series(fingerprint="0" * 16) == []
        fp = rows[0]["fingerprint"]
        assert len(store.series(fingerprint=fp)) == 6       # same machine fields: one series
        (with_result,) = [r for r in store.series(cell_keys=[keys[0]], with_result=True)
                          if r["run_name"] == "w0-1"]
        assert with_result["result"]["cell"]["id"] in ("c1", "c2")
        assert with_result["p50_ms"] == pytest.approx(1.01)
        assert [d["name"] for d in store.documents(since="2026-01-01T01")] == ["w1-2"]
    finally:
        store.close()


# ----------------------------------------------------------------------------- PostgreSQL

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster, started as user postgres; its URL."""
    if os.geteuid() != 0:
        pytest.skip("starting a throwaway PostgreSQL cluster needs root (runuser -u postgres)")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found or not Path(found[-1]).with_name("pg_ctl").exists():
        pytest.skip("Debian's postgresql is not installed: apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not importable: pip install 'pytest-inferbench[postgres]'")
    if shutil.which("runuser") is None:
        pytest.skip("runuser is not installed (util-linux)")
    try:
        import pwd
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("there is no user postgres to run the cluster as")
    initdb = found[-1]
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    data = tempfile.mkdtemp(prefix="inferbench-pg-")
    shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    as_pg = ["runuser", "-u", "postgres", "--"]
    started = False
    try:
        subprocess.run([*as_pg, initdb, "-D", data, "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True, timeout=120)
        # -l: the server's output to a file, not the pipe this process waits on
        subprocess.run([*as_pg, pg_ctl, "-D", data, "-l", f"{data}/server.log",
                        "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                        "-w", "start"], check=True, capture_output=True, timeout=120)
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run([*as_pg, pg_ctl, "-D", data, "-m", "immediate", "stop"],
                           capture_output=True, timeout=60, check=False)
        shutil.rmtree(data, ignore_errors=True)


def _create_database(url: str, name: str) -> str:
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def test_two_sessions_at_once_both_land_whole_in_postgresql(postgres, tmp_path):
    url = resolve_url(_create_database(postgres, "sessions"), tmp_path)
    assert url.startswith("postgresql+psycopg://")
    dirs = [_project(tmp_path / "a"), _project(tmp_path / "b")]
    outs = _concurrent_sessions(dirs, url.replace("postgresql+psycopg://", "postgresql://"))
    _check_sessions_landed_whole(outs, dirs, url)


def _open_and_record(url, k, round_, barrier, errors, recorded):
    """A first-time open of the store (all openers released at once), then one run."""
    try:
        barrier.wait(30)
        store = ResultStore.open(url)
        try:
            recorded.append(store.record(_synthetic_doc(k, round_)).run_id)
        finally:
            store.close()
    except Exception as exc:   # noqa: BLE001 - asserted by the test
        errors.append(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("openers", [2, 4])
def test_concurrent_first_opens_of_an_empty_database_do_not_race(postgres, tmp_path, openers):
    for round_ in range(3):
        url = resolve_url(_create_database(postgres, f"race{openers}_{round_}"), tmp_path)
        barrier = threading.Barrier(openers)
        errors, recorded = [], []

        threads = [threading.Thread(target=_open_and_record,
                                    args=(url, k, round_, barrier, errors, recorded))
                   for k in range(openers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert len(set(recorded)) == openers
        store = ResultStore.open(url)
        try:
            assert store.counts() == (openers, 2 * openers)
        finally:
            store.close()
        import psycopg
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            rows = conn.execute("SELECT name, value FROM inferbench_schema").fetchall()
        assert rows == [("schema_version", str(SCHEMA_VERSION))]


def test_the_same_run_recorded_twice_at_once_is_one_run(postgres, tmp_path):
    # two CI jobs importing the same run files: one adds the run, the other finds it there
    for round_ in range(5):
        url = resolve_url(_create_database(postgres, f"same{round_}"), tmp_path)
        ResultStore.open(url).close()
        barrier = threading.Barrier(2)
        outcomes, errors = [], []

        def record(url=url, barrier=barrier, outcomes=outcomes, errors=errors):
            try:
                store = ResultStore.open(url)
                try:
                    barrier.wait(30)
                    outcomes.append(store.record(_synthetic_doc(0, 0)))
                finally:
                    store.close()
            except Exception as exc:   # noqa: BLE001 - asserted below
                errors.append(f"{type(exc).__name__}: {exc}")
        threads = [threading.Thread(target=record) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert sorted(o.added for o in outcomes) == [False, True]
        assert len({o.run_id for o in outcomes}) == 1
        store = ResultStore.open(url)
        try:
            assert store.counts() == (1, 2)
        finally:
            store.close()


# ----------------------------------------------------------------------------- errors

def _session(pytester, *args):
    return pytester.runpytest_subprocess(*SESSION_ARGS, *args)


def _warnings(result) -> list[str]:
    return [line for line in result.stdout.lines if line.startswith("warning:")]


@pytest.fixture
def project(pytester, monkeypatch):
    monkeypatch.delenv("INFERBENCH_STORE", raising=False)
    monkeypatch.setenv("SPIN_FACTOR", "1")
    pytester.makepyfile(spinmods=SPIN)
    pytester.makefile(".yaml", bench_g=STORED)
    return pytester


def test_an_unreachable_store_is_one_warning_and_the_run_file_is_written(project):
    result = _session(project, "--infer-store", "postgresql://nobody:secret@127.0.0.1:9/x")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=2)
    (warning,) = _warnings(result)
    assert "results store postgresql+psycopg://nobody:***@127.0.0.1:9/x" in warning
    assert "secret" not in result.stdout.str()
    assert "the run file has every result: python -m pytest_inferbench store import " in warning
    assert "results store: " not in result.stdout.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    (path,) = _run_files(project.path)
    assert str(path) in warning
    doc = json.loads(path.read_text())
    assert [r["status"] for r in doc["results"]] == ["passed", "passed"]
    assert all(r["latency_ms"]["n"] > 0 for r in doc["results"])


def test_a_store_with_a_newer_schema_is_refused(project):
    db = project.path / "newer.db"
    ResultStore.open(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE inferbench_schema SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(StoreError, match="newer") as e:
        ResultStore.open(f"sqlite:///{db}")
    assert "schema version 99" in str(e.value)
    assert f"reads up to version {SCHEMA_VERSION}" in str(e.value)

    result = _session(project, "--infer-store", str(db))
    assert result.ret == 0, result.stdout.str()
    (warning,) = _warnings(result)
    assert "schema version 99" in warning and "newer pytest-inferbench" in warning
    (path,) = _run_files(project.path)
    assert len(json.loads(path.read_text())["results"]) == 2
    with sqlite3.connect(db) as conn:      # nothing written into the newer store
        assert conn.execute("SELECT count(*) FROM inferbench_runs").fetchone() == (0,)


def test_open_failures_are_store_errors(tmp_path):
    with pytest.raises(StoreError, match="not a database URL SQLAlchemy can use"):
        ResultStore.open("nosuchdb://x/y")
    with pytest.raises(StoreError, match=r"^results store postgresql\+psycopg://u:\*\*\*@127"
                                         r"\.0\.0\.1:9/x: cannot be used \(") as e:
        ResultStore.open(resolve_url("postgresql://u:pw@127.0.0.1:9/x", tmp_path))
    assert "pw" not in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "dir.db").mkdir()            # a directory where the file should be
    with pytest.raises(StoreError, match="cannot be used"):
        ResultStore.open(f"sqlite:///{tmp_path / 'dir.db'}")


def test_history_mode_without_a_store_is_a_usage_error(pytester, monkeypatch):
    pytester.makefile(".yaml", bench_g="name: g\nbenchmarks:\n  - model: mlp-tiny\n")
    monkeypatch.delenv("INFERBENCH_STORE", raising=False)
    result = pytester.runpytest("--infer-baseline", "history", "--infer-store", "none",
                                "--collect-only")
    assert result.ret == 4
    result.stderr.fnmatch_lines([("*inferbench: --infer-baseline history needs the results "
                                  "store, which is off (--infer-store none)*")])
    assert "Traceback" not in result.stderr.str()
    monkeypatch.setenv("INFERBENCH_STORE", "off")
    result = pytester.runpytest("--infer-baseline", "history", "--collect-only")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*needs the results store, which is off*"])


# ----------------------------------------------------------------------------- import

def test_store_import_twice_adds_nothing_the_second_time(sqlite_sessions, tmp_path, capsys):
    dirs, session_url, _ = sqlite_sessions
    runs = [d / ".inferbench" / "runs" for d in dirs]
    fresh = tmp_path / "imported.db"
    assert cli(["store", "import", *map(str, runs), "--store", str(fresh)]) == 0
    assert capsys.readouterr().out.strip() == \
        f"2 runs added (4 results), 0 already in sqlite:///{fresh}"
    store = ResultStore.open(f"sqlite:///{fresh}")
    try:
        counts = store.counts()
        assert counts == (2, 4)
    finally:
        store.close()
    assert cli(["store", "import", *map(str, runs), "--store", str(fresh)]) == 0
    assert capsys.readouterr().out.strip() == \
        f"0 runs added (0 results), 2 already in sqlite:///{fresh}"
    store = ResultStore.open(f"sqlite:///{fresh}")
    try:
        assert store.counts() == counts
    finally:
        store.close()
    # the sessions recorded these very runs: the same uid from the session and its run file
    assert cli(["store", "import", *map(str, runs), "--store", session_url]) == 0
    assert capsys.readouterr().out.strip().startswith("0 runs added (0 results), 2 already")


def test_imported_run_files_read_back_whole(sqlite_sessions, tmp_path, capsys):
    dirs, _, _ = sqlite_sessions
    files = [f for d in dirs for f in _run_files(d)]
    url = f"sqlite:///{tmp_path / 'load.db'}"
    assert cli(["store", "import", *map(str, files), "--store", url]) == 0
    capsys.readouterr()
    store = ResultStore.open(url)
    try:
        docs = {run_uid(d): d for d in store.documents()}
    finally:
        store.close()
    assert len(docs) == 2
    for f in files:
        loaded = load_run(f)
        stored = docs[run_uid(loaded)]
        assert stored["results"] == [r.to_json() for r in loaded["results"]]
        assert stored["results"] == json.loads(f.read_text())["results"]
        assert run_uid(loaded) == run_uid(json.loads(f.read_text()))
        assert stored["name"] == loaded["name"]
    # the analysis frame reads a store as it reads run files
    import pytest_inferbench
    from_store = pytest_inferbench.load_results(url)
    from_files = pytest_inferbench.load_results(files)
    assert sorted(from_store["id"]) == sorted(from_files["id"])
    assert sorted(from_store["p50_ms"]) == sorted(from_files["p50_ms"])


def test_store_import_usage_errors(tmp_path, capsys):
    assert cli(["store", "import", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing: no such file or directory" in err
    (tmp_path / "empty").mkdir()
    assert cli(["store", "import", str(tmp_path / "empty")]) == 2
    assert "no run files (*.json)" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{}")
    assert cli(["store", "import", str(tmp_path / "junk.json"),
                "--store", str(tmp_path / "s.db")]) == 2
    assert "not a pytest-inferbench run file" in capsys.readouterr().err
    assert cli(["history", "--store", "none"]) == 2
    assert "the results store is off" in capsys.readouterr().err
    assert cli(["history", "--store", "postgresql://nobody@127.0.0.1:9/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be used" in err


# ----------------------------------------------------------------------------- URLs

@pytest.mark.parametrize("value, expected", [
    (None, "sqlite:///{root}/.inferbench/results.db"),
    ("", "sqlite:///{root}/.inferbench/results.db"),
    ("   ", "sqlite:///{root}/.inferbench/results.db"),
    ("none", None), ("off", None), ("NONE", None), ("Off", None),
    ("my/results.db", "sqlite:///{root}/my/results.db"),
    ("/abs/r.db", "sqlite:////abs/r.db"),
    ("postgresql://u:p@db.example:5432/bench", "postgresql+psycopg://u:p@db.example:5432/bench"),
    ("postgres://u@db/bench", "postgresql+psycopg://u@db/bench"),
    ("postgresql+psycopg://u@db/bench", "postgresql+psycopg://u@db/bench"),
    ("sqlite:///x.db", "sqlite:///x.db"),
])
def test_resolve_url(tmp_path, value, expected):
    root = tmp_path.resolve()
    want = expected.format(root=root) if expected else None
    assert resolve_url(value, root) == want


def test_resolve_url_relative_path_is_under_root_not_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    assert resolve_url("x/r.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/x/r.db"
    assert resolve_url("../r.db", tmp_path / "a") == f"sqlite:///{tmp_path.resolve()}/r.db"


def test_shown_hides_a_password():
    assert shown("postgresql+psycopg://bench:s3cr:et@db:5432/r") == \
        "postgresql+psycopg://bench:***@db:5432/r"
    assert shown("postgresql://bench@db/r") == "postgresql://bench@db/r"
    assert shown("sqlite:////tmp/r.db") == "sqlite:////tmp/r.db"
    assert "hunter2" not in shown("postgresql://u:hunter2@h/d")
