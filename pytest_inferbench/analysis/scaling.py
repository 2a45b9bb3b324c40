"""Batch-size scaling: latency = fixed + per_sample x batch, fitted by least squares.

    model = fit_batch_model([1, 8, 32], [2.1, 6.0, 19.5])
    model.predict(16), model.throughput(16)     # ms per batch, samples/s
    model.loo_max_rel_err                       # how far off a prediction for an untested size was

The error of the model's predictions is estimated by leave-one-out: each measured batch size is
predicted from a fit to the others (needs at least three distinct batch sizes); the relative
errors |predicted - measured| / measured are summarised as their mean and maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .frame import ok_rows

SCALING_GROUP = ("run", "model", "runtime_label", "device", "precision", "threads", "workload",
                 "serving_label")


@dataclass
class BatchModel:
    fixed_ms: float                     # cost per query, whatever its size
    per_sample_ms: float                # cost of each sample in it
    batch_sizes: list[int]
    latency_ms: list[float]
    r2: float = math.nan
    loo_rel_errors: list[float] = field(default_factory=list)   # one per point (NaN: not predictable)

    def predict(self, batch_size):
        """Latency (ms) of one query of `batch_size` samples (a number or an array)."""
        return _scalar(self.fixed_ms + self.per_sample_ms * np.asarray(batch_size, dtype=float))

    def throughput(self, batch_size):
        """Samples per second of back-to-back queries of `batch_size` samples."""
        b = np.asarray(batch_size, dtype=float)
        return _scalar(b / (self.fixed_ms + self.per_sample_ms * b) * 1e3)

    @property
    def loo_mean_rel_err(self) -> float:
        errs = [e for e in self.loo_rel_errors if math.isfinite(e)]
        return float(np.mean(errs)) if errs else math.nan

    @property
    def loo_max_rel_err(self) -> float:
        errs = [e for e in self.loo_rel_errors if math.isfinite(e)]
        return float(np.max(errs)) if errs else math.nan

    def describe(self) -> str:
        text = f"latency ≈ {self.fixed_ms:.3g} ms + {self.per_sample_ms:.3g} ms × batch"
        if math.isfinite(self.loo_max_rel_err):
            text += (f"; leave-one-out error mean {100 * self.loo_mean_rel_err:.1f}%, "
                     f"max {100 * self.loo_max_rel_err:.1f}%")
        else:
            text += "; prediction error unknown (needs >= 3 batch sizes)"
        return text


def _scalar(x):
    return float(x) if np.ndim(x) == 0 else x


def _lstsq(b: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    A = np.column_stack([np.ones_like(b), b])
    (a, slope), *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(a), float(slope)


def fit_batch_model(batch_sizes: Sequence[float], latency_ms: Sequence[float]) -> BatchModel:
    """Least-squares fit of latency = fixed + per_sample x batch, with leave-one-out errors.
    Needs at least two distinct batch sizes."""
    b = np.asarray(batch_sizes, dtype=float)
    y = np.asarray(latency_ms, dtype=float)
    keep = np.isfinite(b) & np.isfinite(y)
    b, y = b[keep], y[keep]
    if len(np.unique(b)) < 2:
        raise ValueError("a batch-size model needs at least two distinct batch sizes")
    fixed, slope = _lstsq(b, y)
    fitted = fixed + slope * b
    ss_res = float(np.sum((y - fitted) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else math.nan
    loo = []
    for i in range(len(b)):
        rest = np.arange(len(b)) != i
        if len(np.unique(b[rest])) < 2:
            loo.append(math.nan)
            continue
        a_i, s_i = _lstsq(b[rest], y[rest])
        loo.append(abs(a_i + s_i * b[i] - y[i]) / y[i] if y[i] else math.nan)
    return BatchModel(fixed_ms=fixed, per_sample_ms=slope, batch_sizes=[int(x) for x in b],
                      latency_ms=[float(x) for x in y], r2=r2, loo_rel_errors=loo)


def batch_scaling(df: pd.DataFrame, latency: str = "mean_ms",
                  by: Sequence[str] = SCALING_GROUP) -> pd.DataFrame:
    """One row per configuration measured at two or more batch sizes: the group's keys,
    `fixed_ms`, `per_sample_ms`, `r2`, `loo_mean_rel_err`, `loo_max_rel_err`, `batch_sizes`,
    and `fit` (the BatchModel)."""
    rows = ok_rows(df)
    by = [c for c in by if c in rows]
    out = []
    if rows.empty:
        return pd.DataFrame(columns=[*by, "fixed_ms", "per_sample_ms", "r2", "loo_mean_rel_err",
                                     "loo_max_rel_err", "batch_sizes", "fit"])
    for keys, group in rows.groupby(by, sort=False, dropna=False):
        group = group[group[latency].notna()]
        if group["batch_size"].nunique() < 2:
            continue
        fit = fit_batch_model(group["batch_size"], group[latency])
        keys = keys if isinstance(keys, tuple) else (keys,)
        out.append({**dict(zip(by, keys)), "fixed_ms": fit.fixed_ms,
                    "per_sample_ms": fit.per_sample_ms, "r2": fit.r2,
                    "loo_mean_rel_err": fit.loo_mean_rel_err,
                    "loo_max_rel_err": fit.loo_max_rel_err,
                    "batch_sizes": sorted(set(fit.batch_sizes)), "fit": fit})
    return pd.DataFrame(out, columns=[*by, "fixed_ms", "per_sample_ms", "r2", "loo_mean_rel_err",
                                      "loo_max_rel_err", "batch_sizes", "fit"])
