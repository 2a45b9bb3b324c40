"""A plain Python callable, as the user's factory returned it: a pre-processing step and a
model behind one function, a scikit-learn `predict`, NumPy code, the client of something else.

The factory returns `(fn, {input: per-sample shape})` as a torch factory does; each query calls
`fn(*inputs)` with NumPy arrays in the declared order (batch axis first) and is timed to its
return: what the callable starts elsewhere (threads, a GPU) is its own to finish first. Nothing
is converted, nothing is imported for it (no torch), and it is its own reference in the
numerical check.
"""

from __future__ import annotations

import functools
import platform

import numpy as np

from ..models.artifacts import python_callable
from ..models.calling import flatten_outputs
from .base import LoadContext, RuntimeUnavailable


class PythonRunner:
    name = "python"

    @classmethod
    def check_available(cls, device: str, precision: str, options: dict) -> None:
        if device != "cpu":
            raise RuntimeUnavailable(
                f"runtime python runs a callable on the host and cannot place it on {device} or "
                f"synchronise it there: a callable that uses a GPU is measured with device cpu "
                f"and finishes its own device work before it returns")
        if precision != "fp32":
            raise RuntimeUnavailable(
                f"precision {precision} for runtime python: the callable is given the inputs "
                f"as declared and computes in whatever precision its own code uses (fp32 only)")

    def load(self, model, device: str, precision: str, context: LoadContext) -> None:
        self.check_available(device, precision, context.options)
        self.fn, context.signature = python_callable(model, context)

    def prepare(self, inputs):
        return functools.partial(self.fn, *inputs.values())

    def infer(self, inputs) -> list[np.ndarray]:
        return [np.asarray(a, dtype=np.float32)
                for _, a in flatten_outputs(self.fn(*inputs.values()))]

    def synchronize(self):
        pass

    def close(self):
        self.fn = None

    def info(self) -> dict:
        return {"name": self.name, "version": platform.python_version()}

