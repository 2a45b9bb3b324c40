"""The `model` axis beyond the generated families (spec/families.py): a model file (ONNX,
TorchScript) or a factory (`package.module:function`), with its declared inputs and `dims`, and
an entry's numerical `check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from .families import DecoderSpec, MLPSpec, ResNetSpec, TransformerSpec

_AUTO = "auto"


class ModelInput(BaseModel):
    """One input of a file or factory model: per-sample shape (an axis may be a name bound by
    the model's `dims`), dtype, and how values are generated. For an ONNX file every field is
    optional: the file gives dtypes and shapes, and symbolic axes are bound by name."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    shape: tuple[Annotated[int, Field(ge=1)] | Annotated[str, Field(pattern=r"^[A-Za-z_][\w.-]*$")],
                 ...] | None = None
    dtype: str | None = None
    high: int | None = None        # integers in [low, high)
    low: float | None = None       # integers from low (default 0); floats uniform [low, low+1)
    value: float | None = None     # every element this value (e.g. an attention mask of ones)
    # where the batch axis goes: 0 (default), another axis, or null (fed as declared);
    # "auto" for ONNX files: the first symbolic axis not bound by `dims`
    batch_axis: int | None | Literal["auto"] = _AUTO

    @model_validator(mode="after")
    def _values_fit(self):
        if self.value is not None and (self.high is not None or self.low is not None):
            raise ValueError("give either `value` or a range (`low`/`high`), not both")
        if self.high is not None and self.low is not None and self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be above low ({self.low:g})")
        if isinstance(self.batch_axis, int) and self.batch_axis < 0:
            raise ValueError("batch_axis counts axes from 0")
        return self


def _model_input(value):
    return {"shape": value} if isinstance(value, (list, tuple)) else value


class CheckSpec(BaseModel):
    """The numerical check of a benchmark entry: `check: {tolerance: 0.05}` replaces the
    precision's default tolerance (max error relative to the reference's largest value)."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    tolerance: float | None = Field(None, gt=0)


class _ExternalModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    inputs: dict[str, Annotated[ModelInput, BeforeValidator(_model_input)]] | None = None
    # symbolic axes bound by name: {sequence: 128}; a list is a sweep (one cell per value)
    dims: dict[str, Annotated[int, Field(ge=1)]] | None = None
    data: str | None = None        # real inputs from a .npz or .json file (arrays by name)
    dtype: str = "float32"
    name: str | None = None

    def dims_label(self) -> str:
        return "".join(f"-{k}{v}" for k, v in (self.dims or {}).items())

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value):
        try:
            np.dtype(value)
        except TypeError:
            raise ValueError(f"unknown dtype '{value}' (expected e.g. float32, float16, int64)")
        return value


class FileModel(_ExternalModel):
    kind: Literal["file"] = "file"
    path: str
    format: Literal["onnx", "torchscript"] | None = None

    def label(self) -> str:
        return (self.name or Path(self.path).stem) + self.dims_label()


class FactoryModel(_ExternalModel):
    kind: Literal["factory"] = "factory"
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

    def label(self) -> str:
        return (self.name or self.factory.rpartition(":")[2].rpartition(".")[2]) + \
            self.dims_label()


GeneratedModel = Annotated[Union[MLPSpec, ResNetSpec, TransformerSpec, DecoderSpec],
                          Field(discriminator="family")]
ModelSpec = Union[GeneratedModel, FileModel, FactoryModel]
