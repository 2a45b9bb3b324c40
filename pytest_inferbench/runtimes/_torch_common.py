"""What the torch-based runtimes share: device and precision placement, threads, staging of
inputs (or timed copies), synchronisation, and outputs for the numerical check."""

from __future__ import annotations

import abc
import functools
import threading
import time
from typing import NamedTuple

import numpy as np

from ..measure.device_timer import cuda_timer
from .base import LoadContext, RuntimeUnavailable, check_cuda, require

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchRunnerBase(abc.ABC):
    name = "torch"

    @classmethod
    def check_available(cls, device: str, precision: str, options: dict) -> None:
        """Raise RuntimeUnavailable when this machine cannot run the runtime on this device
        at this precision (before anything is loaded: a search excludes such candidates)."""
        if options.get("cuda_graphs") and not device.startswith("cuda"):
            raise RuntimeUnavailable(f"cuda_graphs needs a CUDA device, not {device}: a CUDA "
                                     f"graph replays captured device kernels (run the cell on "
                                     f"device cuda, or drop cuda_graphs for {device})")
        require("torch", "pip install torch==2.13.0 (CPU) or a CUDA build")
        check_cuda(device)
        if precision not in DTYPES:
            raise RuntimeUnavailable(f"precision {precision} is not available for runtime "
                                     f"{cls.name} (it runs {', '.join(DTYPES)}; int8 is "
                                     f"onnxruntime's dynamic quantisation)")
        if precision == "fp16" and device == "cpu":
            raise RuntimeUnavailable(f"precision fp16 for {cls.name} on cpu: PyTorch's CPU "
                                     f"float16 kernels are reference paths, not a deployment "
                                     f"target; use bf16 on cpu or fp16 on cuda")

    def load(self, model, device: str, precision: str, context: LoadContext) -> None:
        self.check_available(device, precision, context.options)
        graphs = bool(context.options.get("cuda_graphs"))
        torch = require("torch", "pip install torch==2.13.0 (CPU) or a CUDA build")
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, DTYPES[precision])
        self.copies = bool(context.options.get("include_copies")) and self.device.type == "cuda"
        self.graphs = graphs
        self._graphs: dict[tuple, _Graph] = {}     # captured CUDA graphs by input shapes
        self._graph_lock = threading.Lock()         # infer() from a server's threads
        self.capture_s = None
        self.device_timer = None
        self._threads_before = None
        if context.threads is not None:
            self._set_threads(context.threads)
        module, signature = self.build_module(model, context)
        self.module = module
        context.signature = signature
        self._mode = _InferenceModeHold(torch)
        self._mode.__enter__()
        self._thread_state = threading.local()
        self.first_call_s = None
        self._first_calls: dict[tuple, float] = {}

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
        """The per-query callable: the model on inputs staged on the device (or with timed
        copies), synchronised; on CUDA wrapped by a DeviceTimer (self.device_timer), which
        samples device time with CUDA events. With cuda_graphs, a query replays a graph
        captured here (once per input shapes)."""
        torch = self.torch
        module = self.module
        cuda = self.device.type == "cuda"
        if self.graphs:
            launch, compute = self._graph_callables(inputs)
        elif self.copies:
            host = list(inputs.values())
            device, dtype = self.device, self.dtype

            def call_with_copies():
                args = [torch.from_numpy(a).to(device, non_blocking=False) for a in host]
                args = [a.to(dtype) if a.is_floating_point() else a for a in args]
                return _to_host(module(*args))   # the copy back synchronises
            launch = call_with_copies
            compute = functools.partial(module, *self._stage(inputs))   # device-time probes
        else:
            launch = compute = functools.partial(module, *self._stage(inputs))
        if cuda:
            # launch + synchronize per query; one query in ten also records two CUDA events
            self.device_timer = cuda_timer(torch, self.device, launch, compute=compute,
                                           launch_syncs=self.copies)
            fn = self.device_timer.fn
        else:
            self.device_timer = None
            fn = launch
        t0 = time.perf_counter()
        fn()                             # first call: lazy init, compilation for torch_compile
        self._note_first_call(inputs, time.perf_counter() - t0)
        return fn

    def _note_first_call(self, inputs, seconds: float) -> None:
        """first_call_s: the first call at each input shape (torch.compile compiles once per
        shape: the numerical check's batch and the cell's), added up."""
        key = tuple(np.shape(v) for v in inputs.values())
        if key not in self._first_calls:
            self._first_calls[key] = seconds
            self.first_call_s = sum(self._first_calls.values())

    def _graph(self, tensors) -> "_Graph":
        """The CUDA graph for inputs of these shapes and dtypes, with `tensors`' values in its
        static inputs. Captured on first use as the PyTorch CUDA graphs docs do it: static
        inputs on the device, three warm-up calls on a side stream (lazy initialisation,
        cuDNN/cuBLAS choices, TorchScript's profiling runs happen outside the capture), then
        the capture; later uses copy the values in."""
        torch = self.torch
        key = tuple((tuple(t.shape), t.dtype) for t in tensors)
        entry = self._graphs.get(key)
        if entry is not None:
            with torch.inference_mode():     # the static inputs are inference tensors
                for static, t in zip(entry.inputs, tensors):
                    static.copy_(t)
            return entry
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.cuda.device(self.device):
            static_inputs = [t.clone() for t in tensors]
            current = torch.cuda.current_stream(self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.module(*static_inputs)
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.module(*static_inputs)
            torch.cuda.synchronize(self.device)
        entry = _Graph(graph, static_inputs, _flatten(static_out), time.perf_counter() - t0)
        self._graphs[key] = entry
        return entry

    def _graph_callables(self, inputs):
        """(launch, compute) for cuda_graphs: launch replays the graph (with include_copies:
        the host inputs copied into its static inputs first, converted on the device as the
        eager path does, and its outputs copied back); compute replays it alone."""
        torch = self.torch
        entry = self._graph(self._stage(inputs))
        self.capture_s = entry.capture_s
        graph, static_inputs, static_out = entry.graph, entry.inputs, entry.outputs
        if not self.copies:
            return graph.replay, graph.replay
        host = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs.values()]
        # host dtype on the device (fp32 in, converted to the model's dtype on the device)
        staging = [torch.empty(h.shape, dtype=h.dtype, device=self.device)
                   if h.dtype != s.dtype else None for h, s in zip(host, static_inputs)]
        pairs = list(zip(static_inputs, host, staging))

        def replay_with_copies():
            for static, h, stage in pairs:
                if stage is None:
                    static.copy_(h, non_blocking=False)
                else:
                    stage.copy_(h, non_blocking=False)
                    static.copy_(stage)
            graph.replay()
            return [o.cpu() for o in static_out]   # the copy back synchronises
        return replay_with_copies, graph.replay

    def enter_thread(self) -> None:
        """Run first in each thread a workload starts to call the prepared callable: inference
        mode is thread-local, and a thread without it fails on the inference tensors."""
        mode = self.torch.inference_mode()
        mode.__enter__()
        self._thread_state.mode = mode          # kept alive for the thread's lifetime

    def infer(self, inputs) -> list[np.ndarray]:
        """Outputs for the numerical check. With cuda_graphs they are a graph's replayed
        outputs (a graph captured for these shapes, e.g. the check's batch size)."""
        # inference mode is thread-local: a server calls this from its own threads
        with self.torch.inference_mode():
            if self.graphs:
                with self._graph_lock:   # static buffers: one copy-in, replay, copy-out at once
                    entry = self._graph(self._stage(inputs))
                    entry.graph.replay()
                    self.torch.cuda.synchronize(self.device)
                    return [o.float().cpu().numpy() for o in entry.outputs]
            t0 = time.perf_counter()
            out = [o.float().cpu().numpy() for o in _flatten(self.module(*self._stage(inputs)))]
            self._note_first_call(inputs, time.perf_counter() - t0)
            return out

    def synchronize(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def close(self):
        self.device_timer = None
        self._graphs = {}                # frees the graphs' memory pools with their tensors
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
        if self.graphs:
            out["cuda_graphs"] = True
            out["capture_s"] = round(self.capture_s, 4) if self.capture_s is not None else None
            out["graphs_captured"] = len(self._graphs)
        if self.device.type == "cuda":
            out["device_name"] = torch.cuda.get_device_name(self.device)
        return out


class _InferenceModeHold:
    """Inference mode in the loading thread while any runner is loaded. Each runner entering
    and leaving its own guard breaks when two runners close out of order (paired mode loads a
    baseline and a candidate): the guards restore each other's earlier state and inference
    mode stays on for the rest of the process, where a later TorchScript trace then fails
    ("Inference tensors do not track version counter"). One guard per thread (the mode is
    thread-local), counted, is order-free."""
    _state = threading.local()

    def __init__(self, torch):
        self.torch = torch

    def __enter__(self):
        state = self._state
        if getattr(state, "count", 0) == 0:
            state.guard = self.torch.inference_mode()
            state.guard.__enter__()
            state.count = 0
        state.count += 1
        return self

    def __exit__(self, *exc):
        state = self._state
        if getattr(state, "count", 0) <= 0:
            return          # closed from another thread than the one that loaded it
        state.count -= 1
        if state.count == 0:
            state.guard.__exit__(None, None, None)
            state.guard = None


class _Graph(NamedTuple):
    graph: object           # torch.cuda.CUDAGraph
    inputs: list            # static input tensors (copy new values in before a replay)
    outputs: list           # static output tensors (a replay overwrites them)
    capture_s: float        # warm-up and capture


def _flatten(out):
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    return [out]


def _to_host(out):
    return [t.cpu() for t in _flatten(out)]
