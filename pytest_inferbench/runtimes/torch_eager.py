"""PyTorch eager execution under torch.inference_mode()."""

from __future__ import annotations

import functools

from .base import LoadContext, RuntimeUnavailable, check_cuda, require

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchRunner:
    name = "torch"

    def load(self, model, device: str, precision: str, context: LoadContext) -> None:
        torch = require("torch", "pip install torch==2.13.0 (CPU) or a CUDA build")
        from ..models.artifacts import torch_module
        check_cuda(device)
        if precision not in _DTYPES:
            raise RuntimeUnavailable(f"precision {precision} is not available for runtime torch "
                                     f"(torch runs {', '.join(_DTYPES)})")
        if precision == "fp16" and device == "cpu":
            raise RuntimeUnavailable("precision fp16 for torch on cpu: PyTorch's CPU kernels for "
                                     "float16 are reference paths, not a deployment target; use "
                                     "bf16 on cpu or fp16 on cuda")
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, _DTYPES[precision])
        module, signature = torch_module(model, context)
        self.module = module.to(self.device).eval()
        if precision != "fp32":
            self.module = self.module.to(self.dtype)
        context.signature = signature
        self._mode = torch.inference_mode()
        self._mode.__enter__()

    def prepare(self, inputs):
        torch = self.torch
        tensors = []
        for value in inputs.values():
            t = torch.from_numpy(value).to(self.device)
            if t.is_floating_point():
                t = t.to(self.dtype)
            tensors.append(t)
        call = functools.partial(self.module, *tensors)
        if self.device.type == "cuda":
            sync = torch.cuda.synchronize

            def call_synced(call=call, sync=sync):
                out = call()
                sync()
                return out
            return call_synced
        return call

    def synchronize(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def close(self):
        mode = getattr(self, "_mode", None)
        if mode is not None:
            mode.__exit__(None, None, None)
            self._mode = None

    def info(self) -> dict:
        torch = self.torch
        return {"name": self.name, "version": torch.__version__,
                "intra_op_threads": torch.get_num_threads(),
                "inter_op_threads": torch.get_num_interop_threads()}
