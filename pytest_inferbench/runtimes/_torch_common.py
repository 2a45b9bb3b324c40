"""What the torch-based runtimes share: device and precision placement, threads, staging of
inputs (or timed copies), synchronisation, and outputs for the numerical check."""

from __future__ import annotations

import abc
import functools
import threading
import time

import numpy as np

from .base import LoadContext, RuntimeUnavailable, check_cuda, require

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchRunnerBase(abc.ABC):
    name = "torch"

    def load(self, model, device: str, precision: str, context: LoadContext) -> None:
        torch = require("torch", "pip install torch==2.13.0 (CPU) or a CUDA build")
        check_cuda(device)
        if precision not in DTYPES:
            raise RuntimeUnavailable(f"precision {precision} is not available for runtime "
                                     f"{self.name} (it runs {', '.join(DTYPES)}; int8 is "
                                     f"onnxruntime's dynamic quantisation)")
        if precision == "fp16" and device == "cpu":
            raise RuntimeUnavailable(f"precision fp16 for {self.name} on cpu: PyTorch's CPU "
                                     f"float16 kernels are reference paths, not a deployment "
                                     f"target; use bf16 on cpu or fp16 on cuda")
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, DTYPES[precision])
        self.copies = bool(context.options.get("include_copies")) and self.device.type == "cuda"
        self._threads_before = None
        if context.threads is not None:
            self._set_threads(context.threads)
        module, signature = self.build_module(model, context)
        self.module = module
        context.signature = signature
        self._mode = torch.inference_mode()
        self._mode.__enter__()
        self._thread_state = threading.local()
        self.first_call_s = None

    @abc.abstractmethod
    def build_module(self, model, context):
        """Return (callable module on self.device in self.dtype, InputSignature)."""

    def _set_threads(self, threads):
        torch = self.torch
        self._threads_before = torch.get_num_threads()
        if threads.intra:
            torch.set_num_threads(threads.intra)
        if threads.inter and threads.inter != torch.get_num_interop_threads():
            try:
                torch.set_num_interop_threads(threads.inter)
            except RuntimeError as exc:  # only settable before the first parallel work
                raise RuntimeUnavailable(f"threads.inter={threads.inter} for torch: {exc} (torch "
                                         f"sets inter-op threads once per process; run such cells "
                                         f"in their own process, e.g. with -n)") from None

    def _stage(self, inputs):
        torch = self.torch
        tensors = []
        for value in inputs.values():
            t = torch.from_numpy(np.ascontiguousarray(value)).to(self.device)
            if t.is_floating_point():
                t = t.to(self.dtype)
            tensors.append(t)
        return tensors

    def prepare(self, inputs):
        torch = self.torch
        module = self.module
        if self.copies:
            host = list(inputs.values())
            device, dtype = self.device, self.dtype

            def call_with_copies():
                args = [torch.from_numpy(a).to(device, non_blocking=False) for a in host]
                args = [a.to(dtype) if a.is_floating_point() else a for a in args]
                return _to_host(module(*args))   # the copy back synchronises
            fn = call_with_copies
        elif self.device.type == "cuda":
            call = functools.partial(module, *self._stage(inputs))
            sync = functools.partial(torch.cuda.synchronize, self.device)

            def call_synced():
                out = call()
                sync()
                return out
            fn = call_synced
        else:
            fn = functools.partial(module, *self._stage(inputs))
        t0 = time.perf_counter()
        fn()                             # first call: lazy init, compilation for torch_compile
        self.first_call_s = time.perf_counter() - t0
        return fn

    def enter_thread(self) -> None:
        """Run first in each thread a workload starts to call the prepared callable: inference
        mode is thread-local, and a thread without it fails on the inference tensors."""
        mode = self.torch.inference_mode()
        mode.__enter__()
        self._thread_state.mode = mode          # kept alive for the thread's lifetime

    def infer(self, inputs) -> list[np.ndarray]:
        return [o.float().cpu().numpy() for o in _flatten(self.module(*self._stage(inputs)))]

    def synchronize(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def close(self):
        mode = getattr(self, "_mode", None)
        if mode is not None:
            mode.__exit__(None, None, None)
            self._mode = None
        if getattr(self, "_threads_before", None):
            self.torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def info(self) -> dict:
        torch = self.torch
        out = {"name": self.name, "version": torch.__version__,
               "intra_op_threads": torch.get_num_threads(),
               "inter_op_threads": torch.get_num_interop_threads(),
               "include_copies": self.copies,
               "first_call_s": round(self.first_call_s, 4) if self.first_call_s else None}
        if self.device.type == "cuda":
            out["device_name"] = torch.cuda.get_device_name(self.device)
        return out


def _flatten(out):
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    return [out]


def _to_host(out):
    return [t.cpu() for t in _flatten(out)]
