"""Runtimes: one module per runtime behind the Runner protocol (base.py). Adding a runtime = one
module with a Runner class + its name and import path in the registry, spec/runtime.py's
RUNTIMES (import paths, so that collection never imports torch or onnxruntime)."""

from __future__ import annotations

import importlib

from ..spec.runtime import RUNTIMES


def runner_class(name: str):
    module, _, attr = RUNTIMES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
