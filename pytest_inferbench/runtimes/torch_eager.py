"""PyTorch eager execution under torch.inference_mode()."""

from __future__ import annotations

from ..models.artifacts import torch_module
from ._torch_common import TorchRunnerBase


class TorchRunner(TorchRunnerBase):
    name = "torch"

    def build_module(self, model, context):
        module, signature = torch_module(model, context)
        return module.to(self.device, self.dtype), signature
