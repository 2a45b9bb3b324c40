"""ONNX Runtime: CPU, CUDA and TensorRT execution providers.

On a GPU, inputs and outputs are bound on the device with IO binding, so a query times the
model and not host<->device copies; `include_copies: true` times them too (host arrays in,
host arrays out), as a client feeding the model from host memory would see.
"""

from __future__ import annotations

import functools

import numpy as np

from ..measure.device_timer import Unavailable
from ..models.artifacts import onnx_model
from ..models.onnx_precision import check_precision, onnx_for_precision
from .base import LoadContext, RuntimeUnavailable, check_cuda, require

_OPT_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
              "tensorrt": "TensorrtExecutionProvider"}


class OnnxRuntimeRunner:
    name = "onnxruntime"

    @classmethod
    def check_available(cls, device: str, precision: str, options: dict) -> None:
        """Raise RuntimeUnavailable when this machine cannot run onnxruntime on this device
        at this precision (before anything is loaded: a search excludes such candidates)."""
        ort = require("onnxruntime", "pip install onnxruntime")
        provider = options.get("provider") or ("cuda" if device != "cpu" else "cpu")
        if provider != "cpu" and device == "cpu":
            raise RuntimeUnavailable(f"provider {provider} needs a cuda device, not cpu")
        if provider == "cpu" and device != "cpu":
            raise RuntimeUnavailable("provider cpu on a cuda device: use device cpu")
        available = ort.get_available_providers()
        if _PROVIDERS[provider] not in available:
            hint = ("pip install 'pytest-inferbench[gpu]' (onnxruntime-gpu)" if provider == "cuda"
                    else "onnxruntime-gpu built with TensorRT, and TensorRT's libraries")
            raise RuntimeUnavailable(f"onnxruntime has no {_PROVIDERS[provider]} here "
                                     f"(available: {', '.join(available)}): {hint}")
        check_cuda(device)
        check_precision(precision, device)

    def load(self, model, device: str, precision: str, context: LoadContext) -> None:
        self.check_available(device, precision, context.options)
        ort = require("onnxruntime", "pip install onnxruntime")
        provider = context.options.get("provider") or ("cuda" if device != "cpu" else "cpu")
        self.device_id = int(device.split(":")[1]) if ":" in device else 0
        opts = ort.SessionOptions()
        level = context.options.get("graph_optimization") or "all"
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[level])
        threads = context.threads
        if threads is not None and threads.intra:
            opts.intra_op_num_threads = threads.intra
        if threads is not None and threads.inter:
            opts.inter_op_num_threads = threads.inter
            opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        providers = ["CPUExecutionProvider"]
        if provider == "cuda":
            providers = [("CUDAExecutionProvider", {"device_id": self.device_id}),
                         "CPUExecutionProvider"]
        elif provider == "tensorrt":
            providers = [("TensorrtExecutionProvider", {"device_id": self.device_id,
                                                        "trt_fp16_enable": precision == "fp16"}),
                         ("CUDAExecutionProvider", {"device_id": self.device_id}),
                         "CPUExecutionProvider"]
        path, signature = onnx_model(model, context)
        # fp16 variants are judged on the providers the session will use
        path, signature = onnx_for_precision(path, signature, precision, device, context,
                                             providers)
        context.signature = signature
        self.ort = ort
        self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        self.on_gpu = provider != "cpu"
        self.device_timer = None
        if self.on_gpu:
            self.device_timer = Unavailable(
                f"onnxruntime's Python API exposes neither the {_PROVIDERS[provider]}'s CUDA "
                f"stream nor events on it, so only the wall-clock side is measured (the GPU "
                f"monitor's utilisation is the device-side view)")
        self.copies = bool(context.options.get("include_copies"))
        self.level = level
        self.threads = threads

    def prepare(self, inputs):
        if not self.on_gpu or self.copies:
            return functools.partial(self.session.run, None, dict(inputs))
        binding = self.session.io_binding()
        for name, value in inputs.items():
            on_device = self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), "cuda",
                                                              self.device_id)
            binding.bind_ortvalue_input(name, on_device)
        for out in self.session.get_outputs():
            binding.bind_output(out.name, "cuda", self.device_id)
        self._binding = binding
        # run_with_iobinding returns when the provider's stream is synchronised
        return functools.partial(self.session.run_with_iobinding, binding)

    def infer(self, inputs) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in self.session.run(None, dict(inputs))]

    def synchronize(self):
        pass

    def close(self):
        self.device_timer = None
        self.session = None
        self._binding = None

    def info(self) -> dict:
        opts = self.session.get_session_options() if self.session else None
        return {"name": self.name, "version": self.ort.__version__,
                "providers": self.session.get_providers() if self.session else [],
                "graph_optimization": self.level,
                "io_binding": self.on_gpu and not self.copies,
                "include_copies": self.copies,
                "intra_op_threads": opts.intra_op_num_threads if opts else None,
                "inter_op_threads": opts.inter_op_num_threads if opts else None}
