"""Each cell's series in the results store, per machine fingerprint, with its change points:
what the `history` command lists and the report's Trends section draws."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field

from ..core.fingerprint import describe
from .changes import Change, change_points

# store column -> (label, unit, latency-like: up is worse)
METRICS = {"p50_ms": ("p50", "ms", True), "p99_ms": ("p99", "ms", True),
           "throughput": ("throughput", "samples/s", False)}


@dataclass
class Step:
    """A change point with the runs either side of it."""
    metric: str
    change: Change
    run_before: dict
    run_after: dict
    index: int                      # into the series' runs

    @property
    def worse(self) -> bool:
        up = METRICS[self.metric][2]
        return (self.change.ratio > 1) == up

    def to_json(self) -> dict:
        return {"metric": METRICS[self.metric][0], "index": self.index,
                "ratio": round(self.change.ratio, 5), "pvalue": self.change.pvalue,
                "before": self.change.before, "after": self.change.after,
                "worse": self.worse,
                "commits": [self.run_before.get("commit"), self.run_after.get("commit")],
                "date": self.run_after.get("started_at")}


@dataclass
class Series:
    cell: str
    cell_key: str
    fingerprint: str
    machine: dict
    runs: list[dict] = field(default_factory=list)     # oldest first, one per run
    steps: list[Step] = field(default_factory=list)

    @property
    def where(self) -> str:
        return describe(self.machine)

    def values(self, metric: str) -> list:
        return [r.get(metric) for r in self.runs]

    def to_json(self) -> dict:
        return {"cell": self.cell, "cell_key": self.cell_key, "fingerprint": self.fingerprint,
                "machine": self.where,
                "runs": [{k: r.get(k) for k in ("run_id", "started_at", "commit", "branch",
                                                *METRICS)} for r in self.runs],
                "changes": [s.to_json() for s in self.steps]}


def series(rows: list[dict], pattern: str | None = None) -> list[Series]:
    """Store rows (ResultStore.series, oldest first) -> one Series per cell and fingerprint,
    measured runs only (a run's repeats: their mean), change points found per metric."""
    groups: dict[tuple, Series] = {}
    per_run: dict[tuple, dict] = {}
    for row in rows:
        if row.get("status") != "passed" or not row.get("n"):
            continue
        if pattern and not (fnmatch.fnmatch(row["cell"] or "", pattern)
                            or fnmatch.fnmatch(row["cell"] or "", f"*{pattern}*")):
            continue
        key = (row["cell_key"], row["fingerprint"])
        if key not in groups:
            groups[key] = Series(row["cell"], row["cell_key"], row["fingerprint"],
                                 json.loads(row.get("machine") or "{}"))
        run_key = (*key, row["run_id"])
        if run_key not in per_run:
            entry = {k: row.get(k) for k in ("run_id", "started_at", "commit", "branch")}
            entry["_values"] = {m: [] for m in METRICS}
            per_run[run_key] = entry
            groups[key].runs.append(entry)
        for m in METRICS:
            if row.get(m) is not None:
                per_run[run_key]["_values"][m].append(row[m])
    for s in groups.values():
        for r in s.runs:
            values = r.pop("_values")
            for m, vs in values.items():
                r[m] = sum(vs) / len(vs) if vs else None
        for m in METRICS:
            idx = [i for i, r in enumerate(s.runs) if r.get(m)]
            for c in change_points([s.runs[i][m] for i in idx]):
                at = idx[c.index]
                before = idx[c.index - 1] if c.index > 0 else at
                s.steps.append(Step(m, c, s.runs[before], s.runs[at], at))
        s.steps.sort(key=lambda st: (st.index, st.metric))
    return sorted(groups.values(), key=lambda s: (s.cell, s.fingerprint))
