"""What requests to an existing endpoint carry, from its KServe v2 metadata alone.

The metadata gives each input's name, datatype and shape, where -1 marks a dynamic dimension.
A leading -1 is the batch axis (Triton's models with max_batch_size > 0). Other dynamic
dimensions need a shape from the spec (`serving: {inputs: {name: {shape: [...]}}}`, as
perf_analyzer's --shape), and `high` bounds generated integers (token ids). `data: file.npz`
(or .json) sends real inputs instead: one sample (tiled to the batch) or at least a batch.
Where the metadata lists no inputs (servers that leave them to the client, e.g. MLServer
without a model-settings signature), `serving.inputs` declares them: per-sample shape and
dtype, sent with a leading batch axis.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.signature import InputSignature, TensorSpec

TO_NUMPY = {"FP32": "float32", "FP16": "float16", "FP64": "float64", "INT64": "int64",
            "INT32": "int32", "INT16": "int16", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}


FROM_NUMPY = {v: k for k, v in TO_NUMPY.items()}


class EndpointInputError(ValueError):
    """The endpoint's inputs cannot be built from its metadata and the spec: says what to add."""


def declared_metadata(inputs_meta: list[dict], overrides: dict | None) -> list[dict]:
    """The endpoint's inputs: its metadata's; where that lists none, the ones serving.inputs
    declares (per-sample shape, dtype float32 unless given), each with a dynamic batch axis."""
    if inputs_meta or not overrides:
        return inputs_meta
    out = []
    for name, decl in overrides.items():
        dtype = decl.dtype or "float32"
        datatype = dtype.upper() if dtype.upper() in TO_NUMPY else FROM_NUMPY.get(dtype)
        if datatype is None:
            raise EndpointInputError(f"serving.inputs.{name}.dtype '{dtype}' is not one of "
                                     f"{', '.join(TO_NUMPY.values())} (or {', '.join(TO_NUMPY)})")
        out.append({"name": name, "datatype": datatype, "shape": [-1, *decl.shape]})
    return out


def _batched(meta: dict) -> bool:
    shape = list(meta["shape"])
    return bool(shape) and int(shape[0]) == -1


def signature_from_metadata(inputs_meta: list[dict], overrides: dict | None,
                            batch_size: int) -> InputSignature:
    overrides = overrides or {}
    if not inputs_meta:
        raise EndpointInputError("the endpoint's metadata lists no inputs: declare them, e.g. "
                                 "serving: {inputs: {input-0: {shape: [4], dtype: float32}}} "
                                 "(per-sample shape; requests add the batch axis)")
    names = [m["name"] for m in inputs_meta]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise EndpointInputError(f"serving.inputs names {', '.join(unknown)}, which the "
                                 f"endpoint's metadata does not list (its inputs: "
                                 f"{', '.join(names)})")
    specs = []
    for meta in inputs_meta:
        name, shape = meta["name"], [int(d) for d in meta["shape"]]
        if meta["datatype"] not in TO_NUMPY:
            raise EndpointInputError(f"input '{name}' has datatype {meta['datatype']}, which "
                                     f"cannot be generated; give real inputs with `data:`")
        dtype = TO_NUMPY[meta["datatype"]]
        per_sample = shape[1:] if _batched(meta) else shape
        if not _batched(meta) and batch_size != 1:
            raise EndpointInputError(f"input '{name}' has no dynamic batch axis (shape {shape}): "
                                     f"the server batches nothing, so use batch_size: 1")
        decl = overrides.get(name)
        if decl is not None:
            if len(decl.shape) != len(per_sample) or any(
                    d != -1 and d != g for d, g in zip(per_sample, decl.shape)):
                raise EndpointInputError(f"serving.inputs.{name}.shape {list(decl.shape)} does "
                                         f"not fit the endpoint's shape {shape} (per sample: "
                                         f"{per_sample})")
            per_sample = list(decl.shape)
        if any(d < 0 for d in per_sample):
            raise EndpointInputError(f"input '{name}' has dynamic dimensions (shape {shape}): "
                                     f"give its per-sample shape, e.g. serving: {{inputs: "
                                     f"{{{name}: {{shape: {[d if d > 0 else 128 for d in per_sample]}"
                                     f"}}}}}}")
        high = decl.high if decl is not None else None
        specs.append(TensorSpec(name=name, shape=tuple(per_sample), dtype=dtype, high=high))
    return InputSignature(inputs=tuple(specs))


def generate(signature: InputSignature, inputs_meta: list[dict], batch_size: int,
             seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs; an input without a batch axis is sent with its own shape."""
    out = signature.generate(batch_size, seed)
    for meta in inputs_meta:
        if not _batched(meta):
            out[meta["name"]] = out[meta["name"]][0]
    return out


def load_data(path: str | Path, signature: InputSignature, inputs_meta: list[dict],
              batch_size: int) -> dict[str, np.ndarray]:
    """Real inputs from a .npz (arrays by input name) or .json ({name: nested list}) file."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                raw = {k: f[k] for k in f.files}
        else:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise EndpointInputError(f"{path}: expected a JSON object {{input name: array}}")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, EndpointInputError):
            raise
        raise EndpointInputError(f"{path}: cannot read input data: {exc}") from None
    batched = {m["name"]: _batched(m) for m in inputs_meta}
    out = {}
    for spec in signature.inputs:
        if spec.name not in raw:
            raise EndpointInputError(f"{path}: no array for input '{spec.name}' (has: "
                                     f"{', '.join(raw) or 'nothing'})")
        try:
            arr = np.asarray(raw[spec.name], dtype=spec.dtype)
        except (TypeError, ValueError) as exc:
            raise EndpointInputError(f"{path}: input '{spec.name}' is not a {spec.dtype} array: "
                                     f"{exc}") from None
        if not batched[spec.name]:
            out[spec.name] = arr
            continue
        if tuple(arr.shape) == spec.shape:                      # one sample: tile to the batch
            arr = np.repeat(arr[None], batch_size, axis=0)
        elif tuple(arr.shape[1:]) == spec.shape and arr.shape[0] >= batch_size:
            arr = arr[:batch_size]
        else:
            raise EndpointInputError(f"{path}: input '{spec.name}' has shape {list(arr.shape)}; "
                                     f"expected one sample {list(spec.shape)} or at least "
                                     f"{batch_size} samples [{batch_size}, "
                                     f"{', '.join(map(str, spec.shape))}]")
        out[spec.name] = np.ascontiguousarray(arr)
    return out
