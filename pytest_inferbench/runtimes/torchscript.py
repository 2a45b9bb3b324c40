"""TorchScript: the model traced once (cached on disk), then frozen for inference."""

from __future__ import annotations

import warnings

from ..models.artifacts import torchscript_model
from ._torch_common import TorchRunnerBase


class TorchScriptRunner(TorchRunnerBase):
    name = "torchscript"

    def build_module(self, model, context):
        path, signature = torchscript_model(model, context, self.dtype)
        torch = self.torch
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream; a user who names it wants it measured anyway
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(path, map_location=self.device).eval()
            module = module.to(self.dtype)
            # freeze inlines weights and folds constants, as TorchScript deployment does
            module = torch.jit.freeze(module)
        return module, signature
