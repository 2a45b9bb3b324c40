"""The generated model families as a spec writes them (`model: {family: resnet, depth: 18}`)
and the presets (`model: resnet18`): each family's size fields, its label and its input
signature. The modules themselves are built in models/families.py, with deterministic random
weights (no downloads needed)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.signature import InputSignature, TensorSpec


class _Family(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    seed: int = 0

    def label(self) -> str:
        """Short readable name: the family plus every size field that differs from its default."""
        parts = [self.family]
        for name, field in type(self).model_fields.items():
            if name in ("family", "seed"):
                continue
            value = getattr(self, name)
            if value != field.default:
                parts.append(f"{_ABBREV.get(name, name)}{value}")
        if self.seed:
            parts.append(f"s{self.seed}")
        return "-".join(parts)


_ABBREV = {"layers": "l", "hidden": "h", "features": "f", "classes": "c", "depth": "d",
           "width": "w", "resolution": "r", "heads": "nh", "seq_len": "seq", "vocab": "v",
           "channels": "ch", "max_seq": "ms"}


class MLPSpec(_Family):
    family: Literal["mlp"] = "mlp"
    layers: int = Field(2, ge=1, le=64)
    hidden: int = Field(256, ge=1)
    features: int = Field(64, ge=1)
    classes: int = Field(10, ge=1)

    def signature(self) -> InputSignature:
        return InputSignature(inputs=(TensorSpec(name="x", shape=(self.features,),
                                                 dtype="float32"),))


class ResNetSpec(_Family):
    family: Literal["resnet"] = "resnet"
    depth: Literal[10, 18, 34, 50, 101, 152] = 18
    width: int = Field(64, ge=1)
    resolution: int = Field(224, ge=32)
    classes: int = Field(1000, ge=1)
    channels: int = Field(3, ge=1)

    def signature(self) -> InputSignature:
        shape = (self.channels, self.resolution, self.resolution)
        return InputSignature(inputs=(TensorSpec(name="x", shape=shape, dtype="float32"),))


class TransformerSpec(_Family):
    family: Literal["transformer"] = "transformer"
    layers: int = Field(2, ge=1, le=96)
    hidden: int = Field(128, ge=8)
    heads: int = Field(2, ge=1)
    seq_len: int = Field(128, ge=1)
    vocab: int = Field(30522, ge=2)

    @model_validator(mode="after")
    def _heads_divide_hidden(self):
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self

    def signature(self) -> InputSignature:
        return InputSignature(inputs=(
            TensorSpec(name="input_ids", shape=(self.seq_len,), dtype="int64", high=self.vocab),))


class DecoderSpec(_Family):
    """A GPT-style decoder (KV cache, greedy decoding) for generative serving: served by the
    plugin's own OpenAI-compatible server (`serving: {system: openai}` without a url)."""
    family: Literal["decoder"] = "decoder"
    layers: int = Field(4, ge=1, le=96)
    hidden: int = Field(256, ge=8)
    heads: int = Field(4, ge=1)
    vocab: int = Field(32000, ge=2)
    max_seq: int = Field(2048, ge=2)

    @model_validator(mode="after")
    def _heads_divide_hidden(self):
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self

    def signature(self) -> InputSignature:
        """For runtimes that call the decoder whole: a sequence of min(max_seq, 128)."""
        return InputSignature(inputs=(TensorSpec(name="input_ids", shape=(min(self.max_seq, 128),),
                                                 dtype="int64", high=self.vocab),))


FAMILIES = {"mlp": MLPSpec, "resnet": ResNetSpec, "transformer": TransformerSpec,
            "decoder": DecoderSpec}

# Short names a spec may use as `model: NAME`.
PRESETS: dict[str, dict] = {
    "mlp-tiny": {"family": "mlp", "layers": 2, "hidden": 64, "features": 32, "classes": 10},
    "mlp-small": {"family": "mlp", "layers": 3, "hidden": 256, "features": 64, "classes": 10},
    "mlp-large": {"family": "mlp", "layers": 4, "hidden": 2048, "features": 512, "classes": 1000},
    "resnet-tiny": {"family": "resnet", "depth": 10, "width": 16, "resolution": 64, "classes": 10},
    "resnet10": {"family": "resnet", "depth": 10},
    "resnet18": {"family": "resnet", "depth": 18},
    "resnet34": {"family": "resnet", "depth": 34},
    "resnet50": {"family": "resnet", "depth": 50},
    "resnet101": {"family": "resnet", "depth": 101},
    "bert-tiny": {"family": "transformer", "layers": 2, "hidden": 128, "heads": 2, "seq_len": 128},
    "bert-mini": {"family": "transformer", "layers": 4, "hidden": 256, "heads": 4, "seq_len": 128},
    "bert-small": {"family": "transformer", "layers": 4, "hidden": 512, "heads": 8, "seq_len": 128},
    "bert-base": {"family": "transformer", "layers": 12, "hidden": 768, "heads": 12,
                  "seq_len": 128},
}
