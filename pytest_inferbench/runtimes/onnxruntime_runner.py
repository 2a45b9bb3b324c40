"""ONNX Runtime, CPU execution provider (CUDA provider where onnxruntime-gpu is installed)."""

from __future__ import annotations

import functools

from .base import LoadContext, RuntimeUnavailable, check_cuda, require


class OnnxRuntimeRunner:
    name = "onnxruntime"

    def load(self, model, device: str, precision: str, context: LoadContext) -> None:
        ort = require("onnxruntime", "pip install onnxruntime")
        from ..models.artifacts import onnx_model
        if precision != "fp32":
            raise RuntimeUnavailable(f"precision {precision} for onnxruntime needs a converted "
                                     f"model (fp16/int8 conversion), which this version does not "
                                     f"do yet; use fp32")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeUnavailable("onnxruntime-gpu not installed (no CUDAExecutionProvider): "
                                         "pip install 'pytest-inferbench[gpu]'")
            check_cuda(device)
            index = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        path, signature = onnx_model(model, context)
        context.signature = signature
        self.ort = ort
        self.session = ort.InferenceSession(path, providers=providers)
        self.device = device

    def prepare(self, inputs):
        # Inputs are host arrays; on CUDA the copies are part of each call (IO binding comes
        # with the GPU work).
        return functools.partial(self.session.run, None, dict(inputs))

    def synchronize(self):
        pass

    def close(self):
        self.session = None

    def info(self) -> dict:
        opts = self.session.get_session_options() if self.session else None
        return {"name": self.name, "version": self.ort.__version__,
                "providers": self.session.get_providers() if self.session else [],
                "intra_op_threads": opts.intra_op_num_threads if opts else None,
                "inter_op_threads": opts.inter_op_num_threads if opts else None}
