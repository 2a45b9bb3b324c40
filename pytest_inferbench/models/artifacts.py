"""From a model spec to what a runtime loads: a torch module or an ONNX file, plus signature.

Generated families and factories are built in torch; ONNX is exported once per content hash
of (model spec, source bytes, torch and exporter versions) and reused by every run and worker.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from pathlib import Path

from ..runtimes.base import RuntimeUnavailable
from .cache import file_hash
from .signature import InputSignature, TensorSpec

EXPORT_OPSET = 17


def _declared_signature(spec) -> InputSignature | None:
    if not spec.inputs:
        return None
    return InputSignature(inputs=tuple(
        TensorSpec(name=name, shape=tuple(d.shape), dtype=d.dtype or spec.dtype, high=d.high)
        for name, d in spec.inputs.items()))


def _seeded(seed: int):
    import torch
    rng = torch.random.fork_rng(devices=[])
    rng.__enter__()
    torch.manual_seed(seed)
    return rng


def torch_module(spec, context):
    """(nn.Module, InputSignature) for a generated family, a factory or a TorchScript file."""
    import torch
    kind = getattr(spec, "kind", "generated")
    if kind == "file" and spec.format == "onnx":
        raise RuntimeUnavailable("an ONNX file cannot run on a torch runtime (no ONNX -> torch "
                                 "conversion); benchmark it with runtime onnxruntime")
    if kind == "file":
        module = torch.jit.load(spec.path, map_location="cpu")
        context.model_info.update(source=spec.path)
        return module, _declared_signature(spec)
    if kind == "factory":
        return _from_factory(spec)
    rng = _seeded(spec.seed)
    try:
        module, signature = spec.build()
    finally:
        rng.__exit__(None, None, None)
    context.model_info["parameters"] = sum(p.numel() for p in module.parameters())
    return module.eval(), signature


def _from_factory(spec):
    mod_name, _, attr = spec.factory.partition(":")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"model factory '{spec.factory}': cannot import {mod_name}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"model factory '{spec.factory}': {mod_name} has no '{attr}'") from None
    rng = _seeded(0)   # a factory that draws random weights gives the same model every call
    try:
        made = obj()
    finally:
        rng.__exit__(None, None, None)
    inputs = None
    if isinstance(made, tuple):
        made, inputs = made
    signature = _declared_signature(spec)
    if inputs is not None:
        tensors = []
        for name, decl in inputs.items():
            if isinstance(decl, dict):
                tensors.append(TensorSpec(name=name, shape=tuple(decl["shape"]),
                                          dtype=decl.get("dtype", spec.dtype), high=decl.get("high")))
            else:
                tensors.append(TensorSpec(name=name, shape=tuple(decl), dtype=spec.dtype))
        signature = InputSignature(inputs=tuple(tensors))
    if signature is None:
        raise ValueError(f"model factory '{spec.factory}' returned no input spec and the spec has "
                         f"no `inputs`: return (module, {{name: shape}}) or add `inputs`")
    return made.eval(), signature


def _source_key(spec) -> dict:
    key = spec.model_dump(mode="json")
    kind = getattr(spec, "kind", "generated")
    if kind == "file":
        key["source_sha256"] = file_hash(spec.path)
    elif kind == "factory":
        module = importlib.import_module(spec.factory.partition(":")[0])
        try:
            key["source_sha256"] = file_hash(inspect.getsourcefile(module))
        except (TypeError, OSError):
            key["source_sha256"] = None
    return key


def onnx_model(spec, context) -> tuple[str, InputSignature]:
    """Path to an fp32 ONNX file for the spec (the file itself, or a cached export) + signature."""
    if getattr(spec, "kind", None) == "file" and spec.format == "onnx":
        context.model_info.update(source=spec.path, artifact=spec.path)
        return spec.path, onnx_signature(spec.path, spec)
    import torch
    module, signature = torch_module(spec, context)
    key = {"converter": "torch.onnx.export", "torch": torch.__version__, "opset": EXPORT_OPSET,
           "model": _source_key(spec)}
    path = context.convert("onnx-export", key, "model.onnx",
                           lambda tmp: export_onnx(module, signature, tmp))
    return str(path), signature


def torchscript_model(spec, context) -> tuple[str, InputSignature]:
    """A traced TorchScript file for the spec (a TorchScript file is used as it is)."""
    if getattr(spec, "kind", None) == "file" and spec.format == "torchscript":
        context.model_info.update(source=spec.path, artifact=spec.path)
        return spec.path, _declared_signature(spec)
    import torch
    module, signature = torch_module(spec, context)

    def build(tmp: Path):
        example = tuple(torch.from_numpy(a) for a in signature.generate(2, seed=0).values())
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # TracerWarnings about shape arithmetic: shapes other than the batch are fixed
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example, check_trace=False)
        traced.save(str(tmp))

    key = {"converter": "torch.jit.trace", "torch": torch.__version__, "model": _source_key(spec)}
    return str(context.convert("torchscript-trace", key, "model.pt", build)), signature


def export_onnx(module, signature: InputSignature, path: Path) -> None:
    """Export with a dynamic batch axis: the TorchScript-based exporter first (fast, mature),
    then the dynamo exporter if it fails; the error says what both exporters said."""
    import torch
    example = tuple(torch.from_numpy(a) for a in signature.generate(2, seed=0).values())
    names = [t.name for t in signature.inputs]
    dynamic = {n: {0: "batch"} for n in names}
    dynamic["output"] = {0: "batch"}
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, example, str(path), input_names=names,
                              output_names=["output"], dynamic_axes=dynamic,
                              opset_version=EXPORT_OPSET, dynamo=False)
            return
        except Exception as exc:  # noqa: BLE001 - any exporter failure falls back
            errors.append(f"TorchScript-based exporter: {type(exc).__name__}: {exc}")
        try:
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(module, example, str(path), input_names=names,
                              output_names=["output"],
                              dynamic_shapes=tuple({0: batch} for _ in names), dynamo=True)
            return
        except Exception as exc:  # noqa: BLE001
            first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0][:300]
            errors.append(f"dynamo exporter: {type(exc).__name__}: {first}")
    raise RuntimeError("ONNX export failed with both exporters:\n  " + "\n  ".join(errors))


def onnx_signature(path: str, spec=None) -> InputSignature:
    """Inputs of an ONNX file; the first symbolic axis is the batch axis. Spec `inputs` override."""
    declared = _declared_signature(spec) if spec is not None else None
    if declared is not None:
        return declared
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype
    graph = onnx.load(path, load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    tensors = []
    for inp in graph.input:
        if inp.name in initializers:
            continue
        ttype = inp.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
        rest = dims[1:]
        if any(d is None for d in rest):
            raise ValueError(f"{Path(path).name}: input '{inp.name}' has symbolic dimensions "
                             f"{dims} beyond the batch axis; give `inputs: {{{inp.name}: "
                             f"[per-sample shape]}}` in the spec")
        tensors.append(TensorSpec(name=inp.name, shape=tuple(rest),
                                  dtype=str(tensor_dtype_to_np_dtype(ttype.elem_type))))
    return InputSignature(inputs=tuple(tensors))
