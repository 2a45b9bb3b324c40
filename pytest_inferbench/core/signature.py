"""The input signature of a model: names, per-sample shapes, dtypes and how values are drawn.

A tensor's `shape` is per sample: the batch axis is left out and put back at `batch_axis`
(0 for most inputs; another position for e.g. a recurrent state [layers, batch, hidden];
None for an input fed as declared whatever the batch size, such as a sample rate).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

# Inputs whose name says what their values must be (Hugging Face conventions): a mask of
# ones attends to every token; type ids of 0 exist in every vocabulary of token types.
NAMED_VALUES = {"attention_mask": 1, "token_type_ids": 0}
DEFAULT_INT_HIGH = 100


class TensorSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    shape: tuple[int, ...]      # per sample, without the batch axis
    dtype: str = "float32"      # numpy dtype name
    high: int | None = None     # exclusive upper bound for generated integer inputs
    low: float | None = None    # lower bound for generated integers (default 0) and floats
    value: float | None = None  # every element this value (a mask of ones)
    batch_axis: int | None = 0  # where the batch axis goes; None: fed as declared
    dim_names: tuple[str | None, ...] = ()   # per-sample axes bound by name (`dims:`)

    def full_shape(self, batch_size: int) -> tuple[int, ...]:
        if self.batch_axis is None:
            return self.shape
        shape = list(self.shape)
        shape.insert(self.batch_axis, batch_size)
        return tuple(shape)

    def describe(self) -> dict:
        """What a result records of this input (the batch axis included)."""
        out = {"dtype": self.dtype}
        if self.batch_axis != 0:
            out["batch_axis"] = self.batch_axis
        for key in ("high", "low", "value"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class InputSignature(BaseModel):
    model_config = ConfigDict(frozen=True)
    inputs: tuple[TensorSpec, ...]

    def generate(self, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        """Seeded inputs for one batch: normal floats (uniform in [low, low+1) with `low`),
        integers in [low, high), booleans; `value` fills the tensor with one value."""
        rng = np.random.default_rng(seed)
        out = {}
        for spec in self.inputs:
            shape = spec.full_shape(batch_size)
            dtype = np.dtype(spec.dtype)
            if spec.value is not None:
                out[spec.name] = np.full(shape, spec.value, dtype=dtype)
            elif dtype.kind == "f":
                if spec.low is not None:
                    values = spec.low + rng.random(shape, dtype=np.float32)
                else:
                    values = rng.standard_normal(shape, dtype=np.float32)
                out[spec.name] = values.astype(dtype)
            elif dtype.kind in "iu":
                low = int(spec.low) if spec.low is not None else 0
                high = spec.high if spec.high is not None else max(low + 1, DEFAULT_INT_HIGH)
                out[spec.name] = rng.integers(low, high, size=shape, dtype=dtype)
            elif dtype.kind == "b":
                out[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
            else:
                raise ValueError(f"cannot generate inputs of dtype {spec.dtype} for '{spec.name}'")
        return out

    def batch_of(self, arrays: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
        """Real inputs (one sample, or at least a batch, per input) shaped to the batch."""
        out = {}
        for spec in self.inputs:
            if spec.name not in arrays:
                raise ValueError(f"no array for input '{spec.name}' (has: "
                                 f"{', '.join(arrays) or 'nothing'})")
            arr = np.asarray(arrays[spec.name], dtype=spec.dtype)
            if spec.batch_axis is None:
                if tuple(arr.shape) != spec.shape:
                    raise ValueError(f"input '{spec.name}' has shape {list(arr.shape)}; it has "
                                     f"no batch axis and is declared {list(spec.shape)}")
                out[spec.name] = arr
                continue
            axis = spec.batch_axis
            if tuple(arr.shape) == spec.shape:                  # one sample: tile to the batch
                arr = np.repeat(np.expand_dims(arr, axis), batch_size, axis=axis)
            elif arr.ndim == len(spec.shape) + 1 and \
                    tuple(np.delete(np.array(arr.shape), axis)) == spec.shape and \
                    arr.shape[axis] >= batch_size:
                arr = np.take(arr, range(batch_size), axis=axis)
            else:
                raise ValueError(f"input '{spec.name}' has shape {list(arr.shape)}; expected one "
                                 f"sample {list(spec.shape)} or at least {batch_size} samples "
                                 f"{list(spec.full_shape(batch_size))}")
            out[spec.name] = np.ascontiguousarray(arr)
        return out
