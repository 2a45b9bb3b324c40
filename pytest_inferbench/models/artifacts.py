"""From a model spec to what a runtime loads: a torch module or an ONNX file, plus signature.

Generated families and factories are built in torch and called as their authors wrote them
(models/calling.py: inputs by name, outputs flattened). Exports are cached by what the model
*is*, never by where it came from: the digest of the built module (every weight and buffer,
its architecture, and the source of every project file its code comes from), so a change in
any of them, even in a module the factory imports, is a new artifact and never a stale one.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import sys
import sysconfig
import traceback
import types
import warnings
from pathlib import Path

import numpy as np

from ..core.errors import RuntimeUnavailable
from ..core.signature import InputSignature
from ..spec.inputs import InputsProblem, declared_signature, onnx_file_signature
from .cache import file_hash
from .calling import adapt, flatten_outputs
from .families import build as build_family

EXPORT_OPSET = 17
PROBE_BATCH = 2


def _seeded(seed: int):
    import torch
    rng = torch.random.fork_rng(devices=[])
    rng.__enter__()
    torch.manual_seed(seed)
    return rng


class _SeededNumpy:
    """NumPy's and `random`'s global generators seeded for a plain callable's factory, and
    given back as they were (no torch imported for it)."""

    def __init__(self, seed: int):
        import random
        self.random = random
        self.saved = (np.random.get_state(), random.getstate())
        np.random.seed(seed)
        random.seed(seed)

    def __exit__(self, *exc):
        np.random.set_state(self.saved[0])
        self.random.setstate(self.saved[1])


def torch_module(spec, context):
    """(module, InputSignature) for a generated family, a factory or a TorchScript file.

    The module is in eval mode and called positionally in the signature's order; records
    in context.model_info its digest, parameter count and, where it was adapted, the call."""
    import torch
    kind = getattr(spec, "kind", "generated")
    if kind == "file" and spec.format == "onnx":
        raise RuntimeUnavailable("an ONNX file cannot run on a torch runtime (no ONNX -> torch "
                                 "conversion); benchmark it with runtime onnxruntime")
    if kind == "file":
        module = torch.jit.load(spec.path, map_location="cpu")
        context.model_info.update(source=spec.path)
        signature = declared_signature(spec)
        origin = {"file_sha256": file_hash(spec.path)}
    elif kind == "factory":
        module, signature, factory_module = _from_factory(spec)
        origin = {"sources": project_sources(factory_module, module)}
    else:
        rng = _seeded(spec.seed)
        try:
            module, signature = build_family(spec)
        finally:
            rng.__exit__(None, None, None)
        origin = {"spec": spec.model_dump(mode="json")}
    module = module.eval()
    module, call = adapt(module, signature, signature.generate(PROBE_BATCH, seed=0))
    if call["by"] != "position" or call["extras"] or len(call["outputs"]) > 1:
        context.model_info["call"] = call
    context.model_info["outputs"] = call["outputs"]
    if kind != "file":
        context.model_info["parameters"] = sum(p.numel() for p in module.parameters())
    context.model_info["digest"] = model_digest(module, signature, origin)
    return module, signature


def factory_raised(name: str, factory, module, exc: BaseException) -> str:
    """'model factory NAME raised TYPE: message (at file:line in func)': the deepest frame of
    the traceback inside the factory's own file (else its module's), where the user looks."""
    code = getattr(inspect.unwrap(factory), "__code__", None)
    files = {f for f in (getattr(code, "co_filename", None), getattr(module, "__file__", None))
             if f}
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename in files] or frames[-1:]
    where = f" (at {ours[-1].filename}:{ours[-1].lineno} in {ours[-1].name})" if ours else ""
    text = str(exc).strip()
    return (f"model factory '{name}' raised {type(exc).__name__}"
            f"{': ' + text if text else ''}{where}")


def python_callable(spec, context):
    """(callable, InputSignature) of a factory, for runtime python; records its digest (the
    factory's and the callable's project sources, its name and the signature)."""
    if getattr(spec, "kind", "generated") != "factory":
        raise RuntimeUnavailable("runtime python runs the callable a factory returns "
                                 "('pkg.mod:fn' returning (fn, inputs)); a generated model or "
                                 "a model file runs on torch or onnxruntime")
    fn, signature, factory_module = _from_factory(spec, seeded=_SeededNumpy)
    if not callable(fn):
        raise ValueError(f"model factory '{spec.factory}' returned a {type(fn).__name__}, "
                         f"which runtime python cannot call")
    # called once, as a torch module is: what it returns must be arrays (named in the result)
    outputs = flatten_outputs(fn(*signature.generate(PROBE_BATCH, seed=0).values()))
    context.model_info["outputs"] = [name for name, _ in outputs]
    defined_in = sys.modules.get(getattr(fn, "__module__", None) or type(fn).__module__)
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    origin = {"sources": project_sources(factory_module, defined_in), "callable": name}
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((sorted(origin.items()), _export_key(signature))).encode())
    context.model_info.update(digest=h.hexdigest(), call={"by": "position", "callable": name})
    return fn, signature


def _from_factory(spec, seeded=_seeded):
    mod_name, _, attr = spec.factory.partition(":")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"model factory '{spec.factory}': cannot import {mod_name}: {exc} "
                         f"(the spec's directory and pytest's rootdir are importable; a "
                         f"package elsewhere needs `pythonpath` in pytest.ini)") from None
    factory_module = obj
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"model factory '{spec.factory}': {mod_name} has no '{attr}'") from None
    rng = seeded(0)   # a factory that draws random weights gives the same model every call
    try:
        made = obj()
    except Exception as exc:  # noqa: BLE001 - said once, with its type and where it was raised
        raise ValueError(factory_raised(spec.factory, obj, factory_module, exc)) from exc
    finally:
        rng.__exit__(None, None, None)
    returned = None
    if isinstance(made, tuple):
        made, returned = made
    decls = {}
    if returned is not None:
        for name, decl in returned.items():
            if isinstance(decl, dict):
                decls[name] = types.SimpleNamespace(
                    shape=tuple(decl["shape"]), dtype=decl.get("dtype"), high=decl.get("high"),
                    low=decl.get("low"), value=decl.get("value"),
                    batch_axis=decl.get("batch_axis", 0))
            else:
                decls[name] = types.SimpleNamespace(shape=tuple(decl), dtype=None, high=None,
                                                    low=None, value=None, batch_axis=0)
    for name, decl in (spec.inputs or {}).items():   # the spec's fields win, input by input
        base = decls.get(name)
        fields = {k: getattr(decl, k) for k in ("shape", "dtype", "high", "low", "value")}
        if base is not None:
            fields = {k: v if v is not None else getattr(base, k) for k, v in fields.items()}
        fields["batch_axis"] = decl.batch_axis if decl.batch_axis != "auto" else (
            base.batch_axis if base is not None else 0)
        decls[name] = types.SimpleNamespace(**fields)
    if not decls:
        raise ValueError(f"model factory '{spec.factory}' returned no input spec and the spec has "
                         f"no `inputs`: return (module, {{name: shape}}) or add `inputs`")
    signature = declared_signature(types.SimpleNamespace(inputs=decls, dims=spec.dims,
                                                         dtype=spec.dtype))
    return made, _vocabulary_bounds(made, signature), factory_module


def _vocabulary_bounds(module, signature: InputSignature) -> InputSignature:
    """Token ids below the model's vocabulary size (a Hugging Face config's vocab_size) where
    the spec gave no range: ids beyond it index past the embedding table."""
    vocab = getattr(getattr(module, "config", None), "vocab_size", None)
    if not isinstance(vocab, int):
        return signature
    fixed = []
    for t in signature.inputs:
        if t.name.endswith("input_ids") and t.high is None and t.value is None:
            t = t.model_copy(update={"high": vocab})
        fixed.append(t)
    return InputSignature(inputs=tuple(fixed))


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.add(str(Path(__file__).resolve().parents[1]))     # this plugin
    return tuple(str(Path(r).resolve()) for r in roots if r)


def project_sources(*roots) -> dict[str, str]:
    """sha256 of every source file outside the standard library and installed packages that
    the roots' code comes from: the modules they are defined in, and, transitively, the
    project modules those import (a factory whose layer widths live in another module)."""
    installed = _installed_roots()
    seen: dict[str, str] = {}
    stack = []
    for root in roots:
        if isinstance(root, types.ModuleType):
            stack.append(root)
        elif root is not None:
            for m in (root.modules() if hasattr(root, "modules") else [root]):
                stack.append(sys.modules.get(type(m).__module__))
    while stack:
        mod = stack.pop()
        path = getattr(mod, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        path = str(Path(path).resolve())
        if path in seen or path.startswith(installed):
            continue
        try:
            seen[path] = file_hash(path)
        except OSError:
            continue
        for value in list(vars(mod).values()):
            if isinstance(value, types.ModuleType):
                stack.append(value)
            else:
                owner = getattr(value, "__module__", None)
                if isinstance(owner, str) and owner in sys.modules:
                    stack.append(sys.modules[owner])
    return dict(sorted(seen.items()))


def model_digest(module, signature: InputSignature, origin: dict) -> str:
    """What the model is: every weight and buffer (names, dtypes, shapes, bytes), the module's
    structure (its repr carries layer sizes), the source of its classes' project files, its
    input signature and where it came from."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(sorted(origin.items())).encode())
    h.update(repr(_export_key(signature)).encode())   # sizes of `dims` axes are not the model
    h.update(repr(module).encode())
    state = module.state_dict() if hasattr(module, "state_dict") else {}
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def _export_key(signature: InputSignature) -> dict:
    """The signature as an export sees it: axes bound by name are dynamic, so their sizes
    (`dims` values) do not make another export."""
    out = []
    for t in signature.inputs:
        shape = [n if n else d for d, n in zip(t.shape, t.dim_names or (None,) * len(t.shape))]
        out.append({"name": t.name, "dtype": t.dtype, "shape": shape,
                    "batch_axis": t.batch_axis})
    return {"inputs": out}


def onnx_model(spec, context) -> tuple[str, InputSignature]:
    """Path to an fp32 ONNX file for the spec (the file itself, or a cached export) + signature."""
    if getattr(spec, "kind", None) == "file" and spec.format == "onnx":
        context.model_info.update(source=spec.path, artifact=spec.path)
        context.model_info["digest"] = file_hash(spec.path)
        return spec.path, onnx_signature(spec.path, spec)
    import torch
    module, signature = torch_module(spec, context)
    names = context.model_info["outputs"]
    key = {"converter": "torch.onnx.export", "torch": torch.__version__, "opset": EXPORT_OPSET,
           "model": context.model_info["digest"], "signature": _export_key(signature)}
    path = context.convert("onnx-export", key, "model.onnx",
                           lambda tmp: export_onnx(module, signature, tmp, names))
    return str(path), signature


def torchscript_model(spec, context, dtype=None) -> tuple[str, InputSignature]:
    """A traced TorchScript file for the spec (a TorchScript file is used as it is), traced in
    `dtype` (a torch dtype; fp32 when None): a trace records dtypes as constants (attention
    masks' minimum values, casts), so a trace cast to bf16 afterwards mixes dtypes."""
    if getattr(spec, "kind", None) == "file" and spec.format == "torchscript":
        context.model_info.update(source=spec.path, artifact=spec.path)
        context.model_info["digest"] = file_hash(spec.path)
        return spec.path, declared_signature(spec)
    import torch
    module, signature = torch_module(spec, context)

    dtype = dtype or torch.float32

    def build(tmp: Path):
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # the example made here: a cast made under a caller's inference mode would be an
            # inference tensor, which tracing refuses ("do not track version counter")
            example = tuple(torch.from_numpy(a) for a in
                            signature.generate(PROBE_BATCH, seed=0).values())
            example = tuple(t.to(dtype) if t.is_floating_point() else t for t in example)
            # TracerWarnings about shape arithmetic: shapes other than the batch are fixed
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module.to(dtype), example, check_trace=False, strict=False)
        traced.save(str(tmp))

    # traced shapes are fixed: every dims value is its own trace
    key = {"converter": "torch.jit.trace", "torch": torch.__version__,
           "model": context.model_info["digest"], "dtype": str(dtype),
           "signature": signature.model_dump(mode="json")}
    return str(context.convert("torchscript-trace", key, "model.pt", build)), signature


def export_onnx(module, signature: InputSignature, path: Path,
                output_names: list[str] | None = None) -> None:
    """Export with named inputs and outputs and dynamic batch and `dims` axes: the
    TorchScript-based exporter first (fast, mature), then the dynamo exporter if it fails;
    the error says what both exporters said."""
    import torch
    example = tuple(torch.from_numpy(a) for a in signature.generate(PROBE_BATCH, seed=0).values())
    names = [t.name for t in signature.inputs]
    outputs = list(output_names or ["output"])
    dynamic = {}
    for t in signature.inputs:
        axes = {}
        per_sample = list(t.dim_names or (None,) * len(t.shape))
        if t.batch_axis is not None:
            per_sample.insert(t.batch_axis, "batch")
        for i, n in enumerate(per_sample):
            if n:
                axes[i] = n
        dynamic[t.name] = axes
    with torch.inference_mode():
        probe = module(*example)
    probe = probe if isinstance(probe, (list, tuple)) else (probe,)
    for name, out in zip(outputs, probe):   # an output whose first axis follows the batch
        if getattr(out, "ndim", 0) and out.shape[0] == PROBE_BATCH:
            dynamic[name] = {0: "batch"}
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, example, str(path), input_names=names,
                              output_names=outputs, dynamic_axes=dynamic,
                              opset_version=EXPORT_OPSET, dynamo=False)
            return
        except Exception as exc:  # noqa: BLE001 - any exporter failure falls back
            errors.append(f"TorchScript-based exporter: {type(exc).__name__}: {_first_line(exc)}")
        try:
            shapes = tuple({i: torch.export.Dim(n.replace(".", "_"), min=1)
                            for i, n in dynamic[t.name].items()} for t in signature.inputs)
            if _takes_varargs(module):      # forward(*tensors): one entry, the args tuple
                shapes = (shapes,)
            torch.onnx.export(module, example, str(path), input_names=names,
                              output_names=outputs, dynamic_shapes=shapes, dynamo=True,
                              verbose=False)
            return
        except Exception as exc:  # noqa: BLE001
            errors.append(f"dynamo exporter: {type(exc).__name__}: {_first_line(exc)}")
    raise RuntimeError("ONNX export failed with both exporters: " + "; ".join(errors))


def _takes_varargs(module) -> bool:
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    return len(params) == 1 and params[0].kind is params[0].VAR_POSITIONAL


def _first_line(exc) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 300 else first[:299] + "…"


def onnx_signature(path: str, spec=None) -> InputSignature:
    """Inputs of an ONNX file (dtypes and shapes from the file; `dims` and `inputs` of the spec
    bind its symbolic axes)."""
    try:
        return onnx_file_signature(path, spec)
    except InputsProblem as exc:
        raise ValueError(str(exc)) from None
