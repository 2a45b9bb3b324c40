"""`workload.prompts` of a generative benchmark: input and output lengths (fixed or drawn),
a shared prefix, turns of a conversation, or a dataset. workload/prompts.py builds the
requests from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


def _length(value):
    if isinstance(value, bool):
        raise ValueError("expected a token count or {mean: N, stdev: S}")
    if isinstance(value, int):
        return {"mean": value, "stdev": 0}
    if not isinstance(value, dict):
        raise ValueError(f"expected a token count or {{mean: N, stdev: S}}, got {value!r} "
                         f"(to sweep lengths, list whole mappings: prompts: [{{...}}, {{...}}])")
    return value


class Lengths(BaseModel):
    """A token count: fixed (`128`) or drawn, {mean: 512, stdev: 64} (normal, rounded, >= 1)."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    mean: int = Field(ge=1)
    stdev: float = Field(0.0, ge=0)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if not self.stdev:
            return np.full(n, self.mean, dtype=np.int64)
        return np.maximum(1, np.rint(rng.normal(self.mean, self.stdev, n))).astype(np.int64)

    def label(self) -> str:
        return f"{self.mean}" + (f"~{self.stdev:g}" if self.stdev else "")


TokenCount = Annotated[Lengths, BeforeValidator(_length)]


class Prompts(BaseModel):
    """`workload.prompts`: what the requests of a generative benchmark ask."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    input_tokens: TokenCount = Lengths(mean=128)
    output_tokens: TokenCount = Lengths(mean=128)
    shared_prefix: int = Field(0, ge=0)
    dataset: str | None = None           # JSONL file (resolved against the spec's directory)
    turns: int = Field(1, ge=1, le=1000)
    ignore_eos: bool = True              # ask for exactly output_tokens (ignore_eos, min_tokens)

    @model_validator(mode="after")
    def _consistent(self):
        if self.shared_prefix and self.shared_prefix >= self.input_tokens.mean:
            raise ValueError(f"shared_prefix ({self.shared_prefix}) must be shorter than "
                             f"input_tokens ({self.input_tokens.mean}): it is part of them")
        if self.dataset and (self.turns > 1 or self.shared_prefix):
            raise ValueError("a dataset brings its own prompts: write conversations as "
                             "`messages` in it instead of `turns` or `shared_prefix`")
        return self

    def label(self) -> str:
        if self.dataset:
            return f"ds{Path(self.dataset).stem}"
        out = f"in{self.input_tokens.label()}-out{self.output_tokens.label()}"
        if self.shared_prefix:
            out += f"-pre{self.shared_prefix}"
        if self.turns > 1:
            out += f"-t{self.turns}"
        return out
