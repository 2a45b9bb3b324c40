"""The Runner protocol between runtimes and the measurement loop.

A runner loads a model on a device once, then `prepare(inputs)` returns a zero-argument
callable that runs one batch *to completion* (device work synchronised) on pre-staged inputs.
The loop only calls that callable, so the harness adds nothing per query beyond its clock.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from ..core.errors import RuntimeUnavailable  # re-exported: runners raise it


@runtime_checkable
class Runner(Protocol):
    name: str

    def load(self, model, device: str, precision: str, context: "LoadContext") -> None: ...

    def prepare(self, inputs: dict[str, np.ndarray]) -> Callable[[], Any]: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...

    def info(self) -> dict: ...

    # Optional: `enter_thread()` runs first in every thread a workload starts to call the
    # prepared callable (open-loop workers, concurrency clients), for thread-local state.


class LoadContext:
    """What a runner may need besides the model: artifact cache, seeds, options, notes."""

    def __init__(self, cache, seed: int = 0, options: dict | None = None, threads=None):
        self.cache = cache
        self.seed = seed
        self.options = options or {}    # runtime options from the spec (RuntimeSpec.options())
        self.threads = threads          # spec Threads or None
        self.model_info: dict = {"conversions": []}
        self.signature = None           # InputSignature of what the runner is fed, set by load()
        self.model = None               # the model spec (its `data` feeds conversions' judges)
        self.check_tolerance = None     # the entry's `check: {tolerance}`, when it sets one

    def convert(self, step: str, key: dict, filename: str, build):
        """Build (or reuse) a cached artifact; records the step, its time and cache hit."""
        path, meta = self.cache.get_or_build(key, filename, build)
        self.model_info["conversions"].append(
            {"step": step, "cache_hit": meta["cache_hit"], "seconds": meta["conversion_s"]})
        self.model_info.update(artifact=str(path), cache_hit=meta["cache_hit"],
                               conversion_s=round(sum(c["seconds"] for c in
                                                      self.model_info["conversions"]), 4))
        return path


def require(module: str, hint: str):
    """Import a module or raise RuntimeUnavailable naming the package to install."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeUnavailable(f"{module} not installed ({exc}): {hint}") from None


def check_cuda(device: str) -> None:
    if not device.startswith("cuda"):
        return
    torch = require("torch", "pip install torch")
    if not torch.cuda.is_available():
        raise RuntimeUnavailable(f"device {device}: no CUDA device visible to torch on this machine "
                                 f"(torch {torch.__version__}, CUDA build: {torch.version.cuda})")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise RuntimeUnavailable(f"device {device}: only {torch.cuda.device_count()} CUDA "
                                 f"device(s) visible (CUDA_VISIBLE_DEVICES="
                                 f"{__import__('os').environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
