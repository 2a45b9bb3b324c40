"""Runtime registry. Adding a runtime = one module with a Runner class + one line here.

Entries are import paths so that collection never imports torch or onnxruntime.
"""

from __future__ import annotations

import importlib

RUNTIMES: dict[str, str] = {
    "torch": "pytest_inferbench.runtimes.torch_eager:TorchRunner",
    "torchscript": "pytest_inferbench.runtimes.torchscript:TorchScriptRunner",
    "torch_compile": "pytest_inferbench.runtimes.torch_compile:TorchCompileRunner",
    "onnxruntime": "pytest_inferbench.runtimes.onnxruntime_runner:OnnxRuntimeRunner",
}


def runner_class(name: str):
    module, _, attr = RUNTIMES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
