"""Pareto frontiers: the configurations no other configuration beats on every objective.

    pareto_frontier(df)                                  # throughput up, p99 down, per model
    pareto_frontier(df, {"cost_per_million": "min", "p99_ms": "min"})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .frame import ok_rows

DEFAULT_OBJECTIVES = {"samples_per_s": "max", "p99_ms": "min"}


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Rows of `values` (n x k) that are not dominated; directions are "min" or "max" per column.

    A row is dominated when another is at least as good on every objective and strictly better
    on one. Rows with a NaN are never on the frontier. Equal rows are all kept."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(directions):
        raise ValueError("values must be n x k with one direction per column")
    for d in directions:
        if d not in ("min", "max"):
            raise ValueError(f"direction must be 'min' or 'max', got {d!r}")
    signs = np.array([1.0 if d == "min" else -1.0 for d in directions])
    v = values * signs                     # every objective minimised
    finite = np.all(np.isfinite(v), axis=1)
    mask = np.zeros(len(v), dtype=bool)
    idx = np.flatnonzero(finite)
    for i in idx:
        others = v[idx]
        dominated = np.any(np.all(others <= v[i], axis=1) & np.any(others < v[i], axis=1))
        mask[i] = not dominated
    return mask


def pareto_frontier(df: pd.DataFrame, objectives: Mapping[str, str] | None = None,
                    by: str | Sequence[str] | None = "model", only_valid: bool = True
                    ) -> pd.DataFrame:
    """The frontier rows of `df` (passed, measured, valid), per group of `by`, sorted by the
    first objective. `objectives` maps a column to "max" or "min" (default: samples_per_s max,
    p99_ms min)."""
    objectives = dict(objectives or DEFAULT_OBJECTIVES)
    rows = ok_rows(df, only_valid) if "status" in df else df
    cols = list(objectives)
    missing = [c for c in cols if c not in rows]
    if missing:
        raise KeyError(f"no column {missing[0]!r} in the frame")
    if rows.empty:
        return rows.copy()
    groups = [((), rows)] if not by else rows.groupby(list(_as_list(by)), sort=False, dropna=False)
    parts = []
    for _, group in groups:
        mask = pareto_mask(group[cols].to_numpy(dtype=float), [objectives[c] for c in cols])
        parts.append(group[mask])
    out = pd.concat(parts) if parts else rows.iloc[:0]
    keys = list(_as_list(by)) if by else []
    # groups in their order of appearance, then along the first objective (ascending), so the
    # frontier draws as a line
    return out.sort_values(cols[0], kind="stable").sort_values(keys, kind="stable") \
        if keys else out.sort_values(cols[0], kind="stable")


def on_frontier(df: pd.DataFrame, objectives: Mapping[str, str] | None = None,
                by: str | Sequence[str] | None = "model", only_valid: bool = True) -> pd.Series:
    """A boolean Series aligned with df: True for rows on their group's frontier."""
    front = pareto_frontier(df, objectives, by, only_valid)
    return pd.Series(df.index.isin(front.index), index=df.index)


def _as_list(value):
    return [value] if isinstance(value, str) else list(value)
