"""Cost per million inferences and energy per inference.

    with_cost(df, {"cpu": 0.40, "cuda": 2.50})   # adds hourly_price and cost_per_million

A price is per device-hour (or per host-hour): a key is matched against, in order, the cell's
host label (the run's host name), its exact device (`cuda:1`) and its device type (`cuda`).
Cost per million inferences = price per hour / (samples per second x 3600) x 1e6: the price
of the device-time one million samples take at the measured throughput, as if the device did
nothing else.

Energy per inference is the GPU monitor's `energy_per_sample_j` (the whole GPU's energy over
the window divided by the samples processed); CPU cells have none (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd


def hourly_price(row, per_hour: Mapping[str, float]) -> float:
    for key in (row.get("host"), row.get("device"), row.get("device_type")):
        if key is not None and key in per_hour:
            return float(per_hour[key])
    return math.nan


def cost_per_million(samples_per_s: float, price_per_hour: float) -> float:
    """Price of the device-time a million samples take at this throughput."""
    if not samples_per_s or not math.isfinite(samples_per_s) or samples_per_s <= 0:
        return math.nan
    return price_per_hour / (samples_per_s * 3600.0) * 1e6


def with_cost(df: pd.DataFrame, per_hour: Mapping[str, float] | None) -> pd.DataFrame:
    """A copy of df with `hourly_price`, `cost_per_million` (NaN where no price applies) and
    `energy_per_inference_j` (from the GPU monitor; NaN without one)."""
    out = df.copy()
    prices = [hourly_price(row, per_hour or {}) for _, row in out.iterrows()]
    out["hourly_price"] = pd.Series(prices, index=out.index, dtype=float)
    out["cost_per_million"] = [cost_per_million(s, p)
                               for s, p in zip(out["samples_per_s"], out["hourly_price"])]
    out["cost_per_million"] = out["cost_per_million"].astype(float)
    out["energy_per_inference_j"] = out["energy_per_sample_j"].astype(float) \
        if "energy_per_sample_j" in out else math.nan
    return out
