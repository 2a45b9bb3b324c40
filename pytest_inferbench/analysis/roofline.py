"""Roofline of generated models: achieved FLOP/s against the device's peak.

FLOPs per sample are counted analytically from the family's size fields (the same architecture
models/families.py builds; cached per spec, no torch needed): matrix multiplications and
convolutions, 2 FLOPs per multiply-add; element-wise work (activations, normalisation, softmax,
pooling) is not counted. These counts equal torch's FlopCounterMode on the built modules. Memory traffic is approximated by the weights' bytes at
the cell's precision, read once per query (activations are not counted): the arithmetic
intensity is FLOPs per query / weight bytes. Models loaded from files or factories are left out.

A device's peak (FLOP/s) and memory bandwidth (bytes/s) come from the job file's `report`
section (`peak_flops: {cpu: 1.0e11}`, `peak_bandwidth: {cpu: 2.0e10}`), keyed like prices: host
label, exact device, device type. Where it is unknown the chart shows achieved FLOP/s only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import lru_cache

import pandas as pd

from ..models.families import RESNET_BLOCKS
from ..spec.families import FAMILIES

BYTES_PER_PARAMETER = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


def model_work(model_spec: Mapping) -> dict | None:
    """{"flops_per_sample", "parameters", "method"} for a generated model spec (mlp, resnet,
    transformer), else None (files, factories, a family without a formula here)."""
    if not isinstance(model_spec, Mapping) or model_spec.get("family") not in _COUNTERS:
        return None
    key = json.dumps(dict(model_spec), sort_keys=True, default=str)
    return _model_work(key)


@lru_cache(maxsize=256)
def _model_work(key: str) -> dict | None:
    spec = json.loads(key)
    family = FAMILIES[spec["family"]].model_validate(spec)     # the family's defaults filled in
    macs, params = _COUNTERS[spec["family"]](family)
    return {"flops_per_sample": 2.0 * macs, "parameters": int(params),
            "method": "analytic (matmul/conv multiply-adds x 2)"}


def _mlp(m) -> tuple[int, int]:
    dims = [m.features] + [m.hidden] * m.layers + [m.classes]
    pairs = list(zip(dims, dims[1:]))
    return sum(a * b for a, b in pairs), sum(a * b + b for a, b in pairs)


def _conv(size: int, cin: int, cout: int, k: int, stride: int, pad: int) -> tuple[int, int, int]:
    """(output size, multiply-adds, weights) of a square conv without bias."""
    out = (size + 2 * pad - k) // stride + 1
    return out, out * out * cout * cin * k * k, cout * cin * k * k


def _resnet(r) -> tuple[int, int]:
    """The network models/_resnet.py builds: stem, four stages of blocks, pooling, linear."""
    bottleneck = r.depth >= 50
    size, macs, params = _conv(r.resolution, r.channels, r.width, 7, 2, 3)
    params += 2 * r.width                                   # batch norm (scale, shift)
    size = (size + 2 - 3) // 2 + 1                          # max pool 3x3, stride 2
    cin = r.width
    for stage, count in enumerate(RESNET_BLOCKS[r.depth]):
        planes = r.width * 2 ** stage
        for i in range(count):
            stride = 2 if (i == 0 and stage > 0) else 1
            if bottleneck:
                cout = planes * 4
                main = [(cin, planes, 1, 1, 0), (planes, planes, 3, stride, 1),
                        (planes, cout, 1, 1, 0)]
            else:
                cout = planes
                main = [(cin, planes, 3, stride, 1), (planes, planes, 3, 1, 1)]
            x = size
            for ci, co, k, st, pad in main:
                x, m, w = _conv(x, ci, co, k, st, pad)
                macs, params = macs + m, params + w + 2 * co          # conv + batch norm
            if stride != 1 or cin != cout:                  # the shortcut's projection
                _, m, w = _conv(size, cin, cout, 1, stride, 0)
                macs, params = macs + m, params + w + 2 * cout
            size, cin = x, cout
    return macs + cin * r.classes, params + cin * r.classes + r.classes


def _transformer(t) -> tuple[int, int]:
    """models/_transformer.py: per layer qkv, attention (QK^T, AV), projection, 4x feed-forward."""
    s, h, layers = t.seq_len, t.hidden, t.layers
    macs = layers * (12 * s * h * h + 2 * s * s * h)
    params = t.vocab * h + s * h + layers * (12 * h * h + 13 * h)
    return macs, params


_COUNTERS = {"mlp": _mlp, "resnet": _resnet, "transformer": _transformer}


def device_value(row, table: Mapping[str, float] | None) -> float:
    """A per-device figure looked up by host label, exact device, then device type."""
    for key in (row.get("host"), row.get("device"), row.get("device_type")):
        if table and key is not None and key in table:
            return float(table[key])
    return math.nan


def roofline(df: pd.DataFrame, peak_flops: Mapping[str, float] | None = None,
             peak_bandwidth: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Rows of generated models with: flops_per_sample, weight_bytes, arithmetic_intensity
    (FLOP/byte), achieved_flops (FLOP/s), peak_flops, fraction_of_peak, attainable_flops
    (min(peak, intensity x bandwidth) where both are known)."""
    rows = []
    for idx, row in df.iterrows():
        if row.get("status") != "passed" or not row.get("n"):
            continue
        work = model_work((row.get("cell") or {}).get("model"))
        if work is None:
            continue
        bpp = BYTES_PER_PARAMETER.get(row.get("precision") or "fp32", 4)
        weight_bytes = work["parameters"] * bpp
        flops_query = work["flops_per_sample"] * row["batch_size"]
        achieved = work["flops_per_sample"] * row["samples_per_s"]
        peak = device_value(row, peak_flops)
        bandwidth = device_value(row, peak_bandwidth)
        intensity = flops_query / weight_bytes if weight_bytes else math.nan
        attainable = min(peak, intensity * bandwidth) if math.isfinite(peak) and \
            math.isfinite(bandwidth) else peak
        rows.append({"index": idx, "flops_per_sample": work["flops_per_sample"],
                     "parameters_counted": work["parameters"], "weight_bytes": weight_bytes,
                     "arithmetic_intensity": intensity, "achieved_flops": achieved,
                     "peak_flops": peak, "peak_bandwidth": bandwidth,
                     "attainable_flops": attainable,
                     "fraction_of_peak": achieved / peak if math.isfinite(peak) and peak else
                     math.nan, "flop_count_method": work["method"]})
    extra = pd.DataFrame(rows).set_index("index") if rows else None
    if extra is None:
        out = df.iloc[:0].copy()
        for col in ("flops_per_sample", "weight_bytes", "arithmetic_intensity", "achieved_flops",
                    "peak_flops", "fraction_of_peak", "attainable_flops"):
            out[col] = pd.Series(dtype=float)
        return out
    return df.loc[extra.index].join(extra)
