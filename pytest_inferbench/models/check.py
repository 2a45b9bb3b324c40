"""Numerical agreement of what a runtime runs with the source model, once per artifact.

Reference: the source model in fp32 on the CPU — torch eager for torch-built models, ONNX
Runtime's CPU provider for ONNX files. The error is measured relative to the reference's
scale: max|out - ref| / max|ref|, per output, the worst output reported. The result is cached
under the artifact cache, keyed by the artifact's bytes and how it is run, so each converted
artifact is checked once; a changed artifact is checked again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..spec import FileModel
from .artifacts import python_callable, torch_module
from .cache import content_hash, file_hash
from .calling import flatten_outputs
from .inputs import model_inputs

# Max error relative to the reference's largest magnitude. fp32 allows for TF32 convolutions
# on GPUs; int8 for dynamic quantisation of random weights. Broken conversions are far beyond.
TOLERANCE = {"fp32": 1e-2, "fp16": 5e-2, "bf16": 1e-1, "int8": 0.25}
MAX_CHECK_BATCH = 16   # checked at the cell's batch size (capped): catches batch-specialised traces


class OutputMismatch(AssertionError):
    """The outputs disagree; `check` is the comparison, recorded in the failed result."""

    def __init__(self, message: str, check: dict | None = None):
        super().__init__(message)
        self.check = check


def tolerance_for(cell) -> float:
    """The entry's `check: {tolerance}`, else the precision's default."""
    written = cell.check.tolerance if cell.check is not None else None
    return written if written is not None else TOLERANCE[cell.precision]


def _onnx_file(model) -> bool:
    return isinstance(model, FileModel) and model.format == "onnx"


def _is_reference(cell) -> bool:
    if cell.runtime == "python":    # a plain callable: nothing else runs the same model
        return True
    onnx_file = _onnx_file(cell.model)
    ref_runtime = "onnxruntime" if onnx_file else "torch"
    return (cell.runtime == ref_runtime and cell.precision == "fp32" and cell.device == "cpu"
            and not cell.runtime_options)


def reference_outputs(model, inputs: dict, context, runtime: str = "torch") -> list[np.ndarray]:
    """The source model's outputs in fp32 on the CPU: ONNX Runtime for an ONNX file, the
    callable itself for runtime python, else torch eager."""
    if runtime == "python":
        fn, _ = python_callable(model, context)
        return [np.asarray(o, dtype=np.float32) for _, o in flatten_outputs(fn(*inputs.values()))]
    if getattr(model, "kind", None) == "file" and model.format == "onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(model.path, providers=["CPUExecutionProvider"])
        return [np.asarray(o, dtype=np.float32) for o in session.run(None, inputs)]
    import torch

    module, _ = torch_module(model, context)
    with torch.inference_mode():
        out = module.float()(*(torch.from_numpy(a) for a in inputs.values()))
    return [o.float().numpy() for _, o in flatten_outputs(out)]


def compare(got: list[np.ndarray], want: list[np.ndarray], tolerance: float) -> dict:
    if len(got) != len(want):
        return {"ok": False, "detail": f"{len(got)} outputs, the reference has {len(want)}",
                "tolerance": tolerance}
    worst_abs = worst_rel = 0.0
    scales = []
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return {"ok": False, "detail": f"output shape {g.shape}, the reference's {w.shape}",
                    "tolerance": tolerance}
        diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
        max_abs = float(np.nanmax(diff)) if diff.size else 0.0
        if not np.all(np.isfinite(g)):
            max_abs = float("inf")
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        scales.append(scale)
        worst_abs = max(worst_abs, max_abs)
        worst_rel = max(worst_rel, max_abs / scale if scale > 0 else max_abs)
    out = {"ok": worst_rel <= tolerance, "max_abs_err": worst_abs, "max_rel_err": worst_rel,
           "tolerance": tolerance}
    if scales and max(scales) == 0:
        # e.g. torchvision's ViT with weights=None: a zero-initialised head outputs zeros
        out["note"] = ("the reference's outputs are all zero (a zero-initialised layer?): "
                       "agreement shows only that both output zeros")
    return out


def check_cell(cell, runner, context, cache_root: Path) -> dict:
    """Compare the loaded runner with the reference (cached); raise OutputMismatch if off."""
    if _is_reference(cell):
        return {"reference": True}
    artifact = context.model_info.get("artifact")
    tolerance = tolerance_for(cell)
    # the model's digest: a changed factory module is checked again, never served a verdict
    # on its former self (the torch runtimes have no artifact file to hash)
    key = {"artifact_sha256": file_hash(artifact) if artifact else None,
           "digest": context.model_info.get("digest"),
           "model": cell.model.model_dump(mode="json"), "runtime": cell.runtime,
           "options": cell.runtime_options, "precision": cell.precision,
           "device": cell.device.split(":")[0], "tolerance": tolerance,
           "batch": min(cell.batch_size, MAX_CHECK_BATCH)}
    store = Path(cache_root, "checks", content_hash(key) + ".json")
    if store.exists():
        result = {**json.loads(store.read_text()), "cached": True}
    else:
        signature = context.signature
        inputs = model_inputs(cell.model, signature, key["batch"], cell.settings.seed)
        ref_inputs = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
                      for k, v in inputs.items()}
        want = reference_outputs(cell.model, ref_inputs, context.__class__(cache=context.cache))
        got = runner.infer(inputs)
        result = compare(got, want, tolerance)
        result["reference"] = ("onnxruntime cpu fp32" if _onnx_file(cell.model)
                               else "torch eager cpu fp32")
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f".{store.name}.{os.getpid()}")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, store)
        result["cached"] = False
    if not result["ok"]:
        detail = result.get("detail") or (
            f"max relative error {result['max_rel_err']:.3g} > tolerance {result['tolerance']:g} "
            f"(max abs error {result['max_abs_err']:.3g}) against {result['reference']}")
        raise OutputMismatch(f"outputs disagree with the source model: {detail}; if this "
                             f"precision is expected to differ that much, set the entry's "
                             f"`check: {{tolerance: ...}}`", result)
    return result
