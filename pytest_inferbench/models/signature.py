"""The input signature of a model: names, per-sample shapes (no batch axis) and dtypes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

import numpy as np


class TensorSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    shape: tuple[int, ...]      # per sample, without the batch axis
    dtype: str = "float32"      # numpy dtype name
    high: int | None = None     # exclusive upper bound for generated integer inputs


class InputSignature(BaseModel):
    model_config = ConfigDict(frozen=True)
    inputs: tuple[TensorSpec, ...]

    def generate(self, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        """Seeded inputs for one batch: normal floats, integers in [0, high), booleans."""
        rng = np.random.default_rng(seed)
        out = {}
        for spec in self.inputs:
            shape = (batch_size, *spec.shape)
            dtype = np.dtype(spec.dtype)
            if dtype.kind == "f":
                out[spec.name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
            elif dtype.kind in "iu":
                out[spec.name] = rng.integers(0, spec.high or 100, size=shape, dtype=dtype)
            elif dtype.kind == "b":
                out[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
            else:
                raise ValueError(f"cannot generate inputs of dtype {spec.dtype} for '{spec.name}'")
        return out
