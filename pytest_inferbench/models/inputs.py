"""One batch of inputs for a model: the spec's `data` file shaped to the batch, or generated
from the signature (seeded). The signature itself is resolved from the spec in spec/inputs.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.signature import InputSignature
from ..spec.inputs import InputsProblem


def read_arrays(path: str) -> dict:
    """Arrays by input name from a .npz or .json ({name: nested list}) file."""
    p = Path(path)
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputsProblem(f"{p}: cannot read input data: {exc}", "data") from None
    if not isinstance(raw, dict):
        raise InputsProblem(f"{p}: expected a JSON object {{input name: array}}", "data")
    return raw


def model_inputs(model, signature: InputSignature, batch_size: int, seed: int) -> dict:
    """One batch for the model: the spec's `data` file shaped to the batch, else generated."""
    data = getattr(model, "data", None)
    if not data:
        return signature.generate(batch_size, seed)
    try:
        return signature.batch_of(read_arrays(data), batch_size)
    except ValueError as exc:
        raise InputsProblem(f"{data}: {exc}", "data") from None
