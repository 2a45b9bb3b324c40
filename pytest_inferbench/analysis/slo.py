"""The best configuration under a latency SLO, with how sure the verdict is.

    best_under_slo(df, bound_ms=50, percentile=99)   # highest throughput with p99 <= 50 ms,
                                                      # per model and device

A cell qualifies when its measured percentile is within the bound. How sure that is:

- the cell's own SLO verdict (LoadGen's early-stopping rule, at its stated confidence) when its
  workload had the same SLO (`basis` = "early stopping");
- otherwise the percentile's distribution-free confidence interval (`basis` = "percentile CI"):
  "pass" when the interval's upper end is within the bound, "fail" when its lower end is over
  it, else "undetermined" (the estimate is within, but the interval straddles the bound). The
  upper (or lower) end of a two-sided interval at level c is a one-sided bound at (1 + c) / 2,
  which is the confidence reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from .frame import ok_rows


def percentile_key(percentile: float) -> str:
    return f"p{percentile:g}"


def slo_check(row, bound_ms: float, percentile: float = 99.0) -> dict:
    """The verdict for one row (a mapping or Series): verdict, confidence, basis."""
    key = percentile_key(percentile)
    own = row.get("slo_verdict")
    if (isinstance(own, str) and _close(row.get("slo_percentile"), percentile)
            and _close(row.get("slo_bound_ms"), bound_ms)):
        return {"verdict": own, "confidence": row.get("slo_confidence"),
                "basis": "early stopping"}
    value = row.get(f"{key}_ms", math.nan)
    lower = row.get(f"{key}_lower_ms", math.nan)
    upper = row.get(f"{key}_upper_ms", math.nan)
    conf = row.get("confidence", math.nan)
    one_sided = (1 + conf) / 2 if _finite(conf) else math.nan
    if not _finite(value):
        return {"verdict": "undetermined", "confidence": math.nan, "basis": "no data"}
    if _finite(upper) and upper <= bound_ms:
        verdict = "pass"
    elif _finite(lower) and lower > bound_ms:
        verdict = "fail"
    else:                       # the interval straddles the bound, or a side has no bound
        verdict = "undetermined"
    return {"verdict": verdict, "confidence": one_sided if verdict != "undetermined" else math.nan,
            "basis": "percentile CI"}


def best_under_slo(df: pd.DataFrame, bound_ms: float = 50.0, percentile: float = 99.0,
                   by: str | Sequence[str] = ("model", "device"),
                   objective: str = "samples_per_s", conservative: bool = False,
                   only_valid: bool = True) -> pd.DataFrame:
    """Per group of `by`, the passed (and valid) row with the highest `objective` whose
    measured percentile is within `bound_ms` (with conservative=True: whose upper confidence
    bound is). Adds columns slo_check (pass / fail / undetermined), slo_check_confidence,
    slo_check_basis and candidates (how many configurations met the SLO). Groups where no
    configuration qualifies are left out."""
    key = f"{percentile_key(percentile)}_ms"
    by = [by] if isinstance(by, str) else list(by)
    rows = ok_rows(df, only_valid)
    if key not in rows or rows.empty:
        return _empty(df)
    measure = rows[f"{percentile_key(percentile)}_upper_ms"] if conservative else rows[key]
    qualified = rows[measure <= bound_ms]
    qualified = qualified[qualified[objective].notna()]
    out = []
    for _, group in qualified.groupby(by, sort=False, dropna=False):
        best = group.loc[group[objective].idxmax()].copy()
        check = slo_check(best, bound_ms, percentile)
        best["slo_check"] = check["verdict"]
        best["slo_check_confidence"] = check["confidence"]
        best["slo_check_basis"] = check["basis"]
        best["candidates"] = len(group)
        out.append(best)
    if not out:
        return _empty(df)
    return pd.DataFrame(out).reset_index(drop=True)


def _empty(df):
    out = df.iloc[:0].copy()
    for col in ("slo_check", "slo_check_confidence", "slo_check_basis", "candidates"):
        out[col] = pd.Series(dtype=object)
    return out


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _close(a, b) -> bool:
    return _finite(a) and _finite(b) and abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
