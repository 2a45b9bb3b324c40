"""The results store: every session's run and results in a database, through SQLAlchemy 2.

    store = ResultStore.open("sqlite:///.inferbench/results.db")   # or postgresql://...
    store.record(run_doc, source=path)        # idempotent: the same run twice adds nothing
    rows = store.series(cell_keys=[...], fingerprint=fp)   # one cell's history, oldest first
    docs = store.documents()                  # run documents as recorded (parse_run reads them)

Run files stay the exchange format; the store is where history accumulates, shared by every
session (and CI pipeline) that names the same URL. Each run is written in one transaction, so
two sessions recording at once both land whole: SQLite in WAL mode with write transactions
that take the lock when they begin (they wait on each other instead of failing), PostgreSQL
with its own concurrency. Every failure is a StoreError with one line that says what to do.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, event, func, insert, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)

from ..core.fingerprint import fingerprint, machine
from ..core.result import Result
from ..results.cells import cell_key, display
from ..results.runfile import typed_results
from .schema import SCHEMA_VERSION, metadata, results, runs, schema_info
from .url import run_uid, shown

# PostgreSQL: one lock id for creating the schema, so two first sessions do not race
_SCHEMA_LOCK = 7_301_955_118


class StoreError(RuntimeError):
    """A store that cannot be used: unreachable, a schema from a newer version, a bad URL."""


@dataclass
class Recorded:
    run_id: int
    added: bool            # False: this run was in the store already
    results: int


class ResultStore:
    def __init__(self, engine: Engine, url: str):
        self.engine = engine
        self.url = url

    # -- opening
    @classmethod
    def open(cls, url: str) -> ResultStore:
        """Connect, create the tables in an empty store, refuse a newer schema."""
        where = shown(url)
        try:
            engine = _engine(url)
        except (NoSuchModuleError, ArgumentError) as exc:
            raise StoreError(f"results store {where}: not a database URL SQLAlchemy can use "
                             f"({_first(exc)})") from None
        except ModuleNotFoundError as exc:
            hint = (" (pip install 'pytest-inferbench[postgres]')"
                    if "psycopg" in str(exc.name) else "")
            raise StoreError(f"results store {where}: its driver is not installed: "
                             f"{exc.name}{hint}") from None
        store = cls(engine, url)
        try:
            store._prepare()
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(f"results store {where}: cannot be used "
                             f"({_first(getattr(exc, 'orig', None) or exc)})") from None
        except StoreError:
            engine.dispose()
            raise
        return store

    def _prepare(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            metadata.create_all(conn, checkfirst=True)
            row = conn.execute(select(schema_info.c.value)
                               .where(schema_info.c.name == "schema_version")).first()
            if row is None:
                conn.execute(insert(schema_info).values(name="schema_version",
                                                        value=str(SCHEMA_VERSION)))
            elif not str(row[0]).isdigit():
                raise StoreError(f"results store {shown(self.url)}: its schema version "
                                 f"{row[0]!r} is not one pytest-inferbench wrote")
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"results store {shown(self.url)} has schema version {row[0]}, written by "
                    f"a newer pytest-inferbench; this one reads up to version {SCHEMA_VERSION}: "
                    f"upgrade pytest-inferbench, or name another store (--infer-store)")

    def close(self) -> None:
        self.engine.dispose()

    # -- writing
    def record(self, doc: dict, source: str | Path | None = None,
               recorded_at: str | None = None) -> Recorded:
        """Add a run document (as written to a run file) and its results, in one transaction."""
        uid = run_uid(doc)
        prov = doc.get("provenance") or {}
        git = prov.get("git") or {}
        # the run file's version is kept with the run, so documents() says which shape its
        # results have (runs recorded before it was kept are version 1)
        extra = {k: v for k, v in doc.items()
                 if k not in ("format", "name", "provenance", "results", "path")}
        rows = [_as_dict(r) for r in doc.get("results", [])]   # kept as given
        typed = typed_results(doc)      # the indexed columns, read from the typed model
        try:
            with self.engine.begin() as conn:
                found = conn.execute(select(runs.c.id).where(runs.c.uid == uid)).first()
                if found is not None:
                    return Recorded(found[0], False, len(rows))
                run_id = conn.execute(insert(runs).values(
                    uid=uid, name=doc.get("name"), started_at=prov.get("start_time"),
                    ended_at=prov.get("end_time"), commit=git.get("commit"),
                    branch=git.get("branch"), dirty=git.get("dirty"), host=prov.get("host"),
                    fingerprint=fingerprint(prov), machine=json.dumps(machine(prov)),
                    provenance=json.dumps(prov, default=str),
                    extra=json.dumps(extra, default=str),
                    source=str(source) if source else None,
                    recorded_at=recorded_at)).inserted_primary_key[0]
                if rows:
                    conn.execute(insert(results), [_result_row(run_id, i, r, t) for i, (r, t)
                                                   in enumerate(zip(rows, typed))])
        except IntegrityError:
            # another session recorded the same run between the lookup and the insert
            # (PostgreSQL, read committed): it is there, which is what was asked
            with self._reading() as conn:
                found = conn.execute(select(runs.c.id).where(runs.c.uid == uid)).first()
            if found is None:
                raise StoreError(f"results store {shown(self.url)}: the run was not recorded "
                                 f"(a constraint failed)") from None
            return Recorded(found[0], False, len(rows))
        except SQLAlchemyError as exc:
            raise StoreError(f"results store {shown(self.url)}: the run was not recorded "
                             f"({_first(getattr(exc, 'orig', None) or exc)})") from None
        return Recorded(run_id, True, len(rows))

    # -- reading
    def series(self, cell_keys=None, fingerprint: str | None = None, since: str | None = None,
               branch: str | None = None, with_result: bool = False) -> list[dict]:
        """Results with their run's commit, date and fingerprint, oldest run first."""
        cols = [runs.c.id.label("run_id"), runs.c.uid, runs.c.started_at, runs.c.commit,
                runs.c.branch, runs.c.fingerprint, runs.c.machine, runs.c.name.label("run_name"),
                results.c.cell_key, results.c.cell, results.c.test_id, results.c.status,
                results.c.valid, results.c.repeat, results.c.n, results.c.p50_ms,
                results.c.p90_ms, results.c.p99_ms, results.c.mean_ms, results.c.throughput]
        if with_result:
            cols.append(results.c.result)
        q = select(*cols).join(runs, results.c.run_id == runs.c.id)
        if cell_keys is not None:
            q = q.where(results.c.cell_key.in_(list(cell_keys)))
        if fingerprint is not None:
            q = q.where(runs.c.fingerprint == fingerprint)
        if since is not None:
            q = q.where(runs.c.started_at >= since)
        if branch is not None:
            q = q.where(runs.c.branch == branch)
        q = q.order_by(runs.c.started_at, runs.c.id, results.c.position)
        out = []
        with self._reading() as conn:
            for row in conn.execute(q).mappings():
                entry = dict(row)
                if with_result:
                    entry["result"] = json.loads(entry["result"])
                out.append(entry)
        return out

    def documents(self, since: str | None = None) -> list[dict]:
        """Every run (since a date) as a run document: provenance, results, the other keys."""
        q = select(runs).order_by(runs.c.started_at, runs.c.id)
        if since is not None:
            q = q.where(runs.c.started_at >= since)
        docs = []
        with self._reading() as conn:
            run_rows = list(conn.execute(q).mappings())
            by_run: dict[int, list] = {r["id"]: [] for r in run_rows}
            rq = select(results.c.run_id, results.c.result).order_by(results.c.run_id,
                                                                   results.c.position)
            if since is not None:
                rq = rq.join(runs, results.c.run_id == runs.c.id).where(
                    runs.c.started_at >= since)
            for run_id, result in conn.execute(rq):
                if run_id in by_run:
                    by_run[run_id].append(json.loads(result))
        for r in run_rows:
            # as recorded: readers bring it to this version (results/runfile.parse_run)
            docs.append({"format": "pytest-inferbench-run", "version": 1, "name": r["name"],
                         "provenance": json.loads(r["provenance"] or "{}"),
                         **json.loads(r["extra"] or "{}"), "results": by_run[r["id"]],
                         "store_run": r["id"]})
        return docs

    def counts(self) -> tuple[int, int]:
        with self._reading() as conn:
            return (conn.execute(select(func.count()).select_from(runs)).scalar_one(),
                    conn.execute(select(func.count()).select_from(results)).scalar_one())

    @contextmanager
    def _reading(self):
        """A connection for queries: a plain (deferred) transaction on SQLite, so readers
        never hold the write lock; any failure is a StoreError."""
        try:
            with self.engine.connect().execution_options(inferbench_read=True) as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"results store {shown(self.url)}: cannot be read "
                             f"({_first(getattr(exc, 'orig', None) or exc)})") from None


def _wal(dbapi_conn, timeout: float = 60.0) -> None:
    """Switch the connection to WAL mode. SQLite answers "database is locked" at once, without
    waiting (its busy timeout does not cover this switch), while another connection holds
    the lock: two processes creating one store at once met it in CI. Retry until `timeout`."""
    deadline, delay = time.monotonic() + timeout, 0.005
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.2)


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):
            # pysqlite's own transaction handling off, so that BEGIN below is ours
            dbapi_conn.isolation_level = None
            _wal(dbapi_conn)
            dbapi_conn.execute("PRAGMA foreign_keys=ON")

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # take the write lock at the start: two writers wait (timeout) rather than one
            # failing when its read snapshot cannot be upgraded
            read = conn.get_execution_options().get("inferbench_read")
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args=_connect_args(parsed))


def _connect_args(parsed) -> dict:
    if parsed.get_backend_name() == "postgresql":
        return {"connect_timeout": 10}
    return {}


def _result_row(run_id: int, position: int, r: dict, t: Result) -> dict:
    """A results row: the result's JSON as given (`r`) and its indexed figures (`t`, typed)."""
    lat = t.latency_ms

    def p(name):
        entry = lat.percentiles.get(name)
        return entry.value if entry is not None else None
    return {"run_id": run_id, "position": position, "cell_key": cell_key(t), "cell": display(t),
            "test_id": t.id, "status": t.status, "valid": t.valid,
            "repeat": t.repeat, "n": lat.n, "p50_ms": p("p50"),
            "p90_ms": p("p90"), "p99_ms": p("p99"), "mean_ms": lat.mean,
            "throughput": t.throughput.samples_per_s,
            "result": json.dumps(r, default=str)}


def _as_dict(result) -> dict:
    return result.to_json() if hasattr(result, "to_json") else dict(result)


def _first(exc) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
