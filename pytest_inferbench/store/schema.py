"""The results store's tables (SQLAlchemy Core): one row per session, one per result.

Headline metrics are columns (queries over months of history read no JSON); the whole Result
is kept as JSON beside them, so nothing measured is lost and newer fields need no migration.
A store records the schema version it was made with; a newer one is refused, not guessed at.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 1

metadata = MetaData()

schema_info = Table(
    "inferbench_schema", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

runs = Table(
    "inferbench_runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # a hash of the run's provenance and results: recording or importing it twice adds nothing
    Column("uid", String(64), nullable=False, unique=True),
    Column("name", String(256)),
    Column("started_at", String(40), index=True),     # ISO 8601, UTC: sorts as text
    Column("ended_at", String(40)),
    Column("commit", String(64)),
    Column("branch", String(256)),
    Column("dirty", Boolean),
    Column("host", String(256)),
    Column("fingerprint", String(32), index=True),    # core/fingerprint.py
    Column("machine", Text),                          # the fingerprint's parts, JSON
    Column("provenance", Text),                       # JSON
    Column("extra", Text),                            # the run file's other top-level keys, JSON
    Column("source", Text),                           # the run file it came from, if any
    Column("recorded_at", String(40)),
)

results = Table(
    "inferbench_results", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("inferbench_runs.id", ondelete="CASCADE"),
           nullable=False, index=True),
    Column("position", Integer, nullable=False),      # order within the run file
    Column("cell_key", String(32), nullable=False),   # results/cells.py cell_key
    Column("cell", Text),                             # spec::id, for people
    Column("test_id", Text),
    Column("status", String(16)),
    Column("valid", Boolean),
    Column("repeat", Integer),
    Column("n", Integer),
    Column("p50_ms", Float),
    Column("p90_ms", Float),
    Column("p99_ms", Float),
    Column("mean_ms", Float),
    Column("throughput", Float),                      # samples/s
    Column("result", Text, nullable=False),           # the whole Result, JSON
)
Index("inferbench_results_cell", results.c.cell_key, results.c.run_id)
