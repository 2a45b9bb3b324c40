"""Runtime registry. Adding a runtime = one module with a Runner class + one line here.

Entries are import paths so that collection never imports torch or onnxruntime.
"""

from __future__ import annotations

import importlib

RUNTIMES: dict[str, str] = {
    "torch": "pytest_inferbench.runtimes.torch_eager:TorchRunner",
    "onnxruntime": "pytest_inferbench.runtimes.onnxruntime_runner:OnnxRuntimeRunner",
}


def runner_class(name: str):
    module, _, attr = RUNTIMES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
