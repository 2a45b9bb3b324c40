"""Build a generated model family's torch module, with deterministic random weights (the
caller seeds torch): the schemas (size fields, labels, signatures) are spec/families.py's.
torch is imported only when a module is built, so that collection stays fast."""

from __future__ import annotations

from ..core.signature import InputSignature
from ..spec.families import DecoderSpec, MLPSpec, ResNetSpec, TransformerSpec

# basic blocks per stage, by depth (torchvision's resnet layouts)
RESNET_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
                 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def build(spec) -> tuple[object, InputSignature]:
    """(torch module, input signature) of a generated family's spec."""
    return _module(spec), spec.signature()


def _module(spec):
    if isinstance(spec, MLPSpec):
        import torch.nn as nn
        dims = [spec.features] + [spec.hidden] * spec.layers
        layers = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], spec.classes))
        return nn.Sequential(*layers)
    if isinstance(spec, ResNetSpec):
        from ._resnet import build_resnet  # lazy: torch
        return build_resnet(RESNET_BLOCKS[spec.depth], bottleneck=spec.depth >= 50,
                            width=spec.width, classes=spec.classes, channels=spec.channels)
    if isinstance(spec, TransformerSpec):
        from ._transformer import build_encoder  # lazy: torch
        return build_encoder(spec.layers, spec.hidden, spec.heads, spec.seq_len, spec.vocab)
    if isinstance(spec, DecoderSpec):
        from ._decoder import build_decoder  # lazy: torch
        return build_decoder(spec.layers, spec.hidden, spec.heads, spec.vocab, spec.max_seq)
    raise TypeError(f"not a generated model family: {type(spec).__name__}")
