"""Call a user's torch module the way its authors wrote it, for every runtime and export.

Hugging Face modules (and many others) take their inputs by keyword (`input_ids`,
`attention_mask`, ...), with optional parameters in between that a positional call would fill
by mistake (GPT-2's second parameter is `past_key_values`), and return a `ModelOutput` (a
dict) or nested tuples. `adapt` wraps such a module in `NamedCall`: positional tensors in the
signature's order in, inputs passed by name, caches turned off where the module offers it
(`use_cache=False`: a benchmark of one forward pass has no cache to reuse, and a cache object
is not a tensor any runtime or exporter can return), and a flat tuple of tensors out, with a
name for each (`last_hidden_state`, `logits`, `output.1`). What was done is recorded.
A module whose call is already plain (positional tensors in, tensors out) is left as it is.
"""

from __future__ import annotations

import inspect
import sys

import numpy as np

# Keyword parameters set when the module has them and the inputs do not name them.
EXTRAS = {"use_cache": False}


class OutputError(TypeError):
    """A model output that is not made of tensors (with the path to it)."""


def _is_tensor(out) -> bool:
    """A torch tensor or a NumPy array (runtime python's callables), without importing torch."""
    torch = sys.modules.get("torch")
    return isinstance(out, np.ndarray) or (torch is not None and isinstance(out, torch.Tensor))


def flatten_outputs(out, prefix: str = "") -> list[tuple[str, object]]:
    """(name, tensor) for every tensor (or NumPy array) in any nesting of tuples, lists, dicts
    and ModelOutput-like objects; None entries are skipped (ModelOutput leaves unset fields
    None)."""
    if _is_tensor(out):
        return [(prefix or "output", out)]
    if out is None:
        return []
    if isinstance(out, dict) or (hasattr(out, "keys") and hasattr(out, "__getitem__")):
        items = [(str(k), out[k]) for k in out.keys()]
    elif isinstance(out, (list, tuple)):
        items = [(str(i), o) for i, o in enumerate(out)]
    else:
        where = f" at '{prefix}'" if prefix else ""
        hint = (" (a cache: pass use_cache=False, or return only tensors from the factory's "
                "module)" if "cache" in type(out).__name__.lower() else "")
        raise OutputError(f"the model returned a {type(out).__name__}{where}, not tensors or "
                          f"arrays{hint}")
    flat = []
    for key, value in items:
        flat += flatten_outputs(value, f"{prefix}.{key}" if prefix else key)
    return flat


def output_names(out) -> list[str]:
    """Names for a module's outputs: one tensor is "output"; a tuple's are output0, output1..
    as before; dict keys (ModelOutput fields) by their names."""
    import torch
    if isinstance(out, torch.Tensor):
        return ["output"]
    if isinstance(out, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in out):
        return [f"output{i}" if i else "output" for i in range(len(out))]
    return [name for name, _ in flatten_outputs(out)]


def _forward_parameters(module):
    forward = getattr(module, "forward", None)
    if forward is None:
        return None
    try:
        return inspect.signature(forward).parameters
    except (TypeError, ValueError):      # TorchScript and C++ modules
        return None


def call_plan(module, input_names: list[str]) -> dict:
    """How to call the module: {"by": "keyword"|"position", "extras": {...}}."""
    params = _forward_parameters(module)
    if params is None:
        return {"by": "position", "extras": {}}
    named = [n for n, p in params.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    matched = [n for n in input_names if n in named]
    extras = {k: v for k, v in EXTRAS.items() if k in named and k not in input_names}
    positional = [n for n, p in params.items()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if input_names == positional[:len(input_names)]:
        by = "position"            # the same call either way: no adapter needed for it
    elif matched and len(matched) == len(input_names):
        by = "keyword"
    elif matched and takes_kwargs:
        by = "keyword"
    elif matched:
        missing = [n for n in input_names if n not in named]
        raise TypeError(f"the module's forward({', '.join(named)}) has no parameter "
                        f"{', '.join(map(repr, missing))}: name the inputs after its parameters")
    else:
        by = "position"
        if not any(p.kind is p.VAR_POSITIONAL for p in params.values()) and \
                len(input_names) > len(positional):
            raise TypeError(f"{len(input_names)} inputs ({', '.join(input_names)}) for a "
                            f"forward({', '.join(named)}) that takes {len(positional)}")
    return {"by": by, "extras": extras}


def _plain(out) -> bool:
    import torch
    return isinstance(out, torch.Tensor) or (
        isinstance(out, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in out))


def adapt(module, signature, probe: dict):
    """(module to run, call info). `probe` holds example inputs (numpy, by name) used once to
    see what the module returns."""
    import torch
    names = [t.name for t in signature.inputs]
    plan = call_plan(module, names)
    tensors = [torch.from_numpy(probe[n]) for n in names]
    wrapped = NamedCall(module, names, plan) if (plan["by"] == "keyword" or plan["extras"]) \
        else module
    with torch.inference_mode():
        out = wrapped(*tensors) if wrapped is not module else module(*tensors)
        if wrapped is module and not _plain(out):
            wrapped = NamedCall(module, names, plan)
            out = wrapped(*tensors)
    if wrapped is not module:
        info = {"by": plan["by"], "extras": plan["extras"], "outputs": list(wrapped.names)}
    else:
        info = {"by": "position", "extras": {}, "outputs": output_names(out)}
    return wrapped, info


def _named_call_class():
    import torch

    class _NamedCall(torch.nn.Module):
        """Positional tensors in (the signature's order), the module called by keyword where
        it takes keywords, a flat tuple of tensors out; `names` are the outputs' names."""

        def __init__(self, module, input_names, plan):
            super().__init__()
            self.module = module
            self.input_names = list(input_names)
            self.by_name = plan["by"] == "keyword"
            self.extras = dict(plan["extras"])
            self.names: tuple[str, ...] = ()

        def forward(self, *tensors):
            if self.by_name:
                out = self.module(**dict(zip(self.input_names, tensors)), **self.extras)
            else:
                out = self.module(*tensors, **self.extras)
            flat = flatten_outputs(out)
            if not self.names:
                self.names = tuple(n for n, _ in flat)
            if len(flat) == 1:
                return flat[0][1]
            return tuple(t for _, t in flat)

    return _NamedCall


_CLASS = None


def NamedCall(module, input_names, plan):   # noqa: N802 - builds an nn.Module subclass lazily
    global _CLASS
    if _CLASS is None:
        _CLASS = _named_call_class()
    return _CLASS(module, input_names, plan).eval()
