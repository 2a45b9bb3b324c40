"""torch.compile (TorchInductor); compilation happens on the first call, outside the timing,
and its duration is recorded as first_call_s."""

from __future__ import annotations

from ..models.artifacts import torch_module
from ._torch_common import TorchRunnerBase
from .base import RuntimeUnavailable


class TorchCompileRunner(TorchRunnerBase):
    name = "torch_compile"

    def build_module(self, model, context):
        torch = self.torch
        module, signature = torch_module(model, context)
        module = module.to(self.device, self.dtype)
        mode = context.options.get("mode") or "default"
        self.mode = mode
        return torch.compile(module, mode=mode, dynamic=False), signature

    def prepare(self, inputs):
        try:
            return super().prepare(inputs)
        except Exception as exc:  # noqa: BLE001 - inductor reports toolchain problems this way
            name = type(exc).__name__
            if "BackendCompilerFailed" in name or "InductorError" in name:
                raise RuntimeUnavailable(f"torch.compile does not work here: {str(exc)[:400]}")
            raise

    def info(self) -> dict:
        return {**super().info(), "compile_mode": self.mode}
