"""A model's input signature from what the spec declares: an ONNX file's own graph inputs, a
factory's declared inputs, or the spec's `inputs` and `dims`.

ONNX files: dtypes always come from the file; a static axis is kept; a symbolic axis is bound
by its name from `dims` (every input's axis of that name), or by a per-sample `shape` given for
that input; the batch axis is the first symbolic axis left unbound (an input with none, such
as a scalar sample rate or a state of fixed shape, is fed as declared). Anything left open is
an error that names the input, the axis and the fix.
"""

from __future__ import annotations

from ..core.signature import NAMED_VALUES, InputSignature, TensorSpec


class InputsProblem(ValueError):
    """The inputs cannot be built from the model and the spec; `field` is the spec key to fix
    ("inputs" or "dims"), the message says what to write."""

    def __init__(self, message: str, field: str = "inputs"):
        super().__init__(message)
        self.field = field


def _tensor(name, shape, dtype, decl, batch_axis, dim_names=()) -> TensorSpec:
    fields = {}
    if decl is not None:
        fields = {k: getattr(decl, k) for k in ("high", "low", "value")
                  if getattr(decl, k) is not None}
    if not fields and name in NAMED_VALUES:
        fields = {"value": NAMED_VALUES[name]}
    return TensorSpec(name=name, shape=tuple(shape), dtype=dtype, batch_axis=batch_axis,
                      dim_names=tuple(dim_names), **fields)


def declared_signature(spec) -> InputSignature | None:
    """The spec's `inputs` of a factory or TorchScript file (shapes given), dims bound."""
    if not spec.inputs:
        return None
    dims = spec.dims or {}
    tensors = []
    for name, decl in spec.inputs.items():
        if decl.shape is None:
            raise InputsProblem(f"input '{name}' needs a per-sample `shape` (only an ONNX file "
                                f"carries its own shapes)")
        shape, names = [], []
        for axis in decl.shape:
            if isinstance(axis, str):
                if axis not in dims:
                    raise InputsProblem(f"input '{name}' has an axis named '{axis}' that `dims` "
                                        f"does not bind: add `dims: {{{axis}: N}}`", "dims")
                shape.append(dims[axis])
                names.append(axis)
            else:
                shape.append(axis)
                names.append(None)
        batch_axis = 0 if decl.batch_axis == "auto" else decl.batch_axis
        if batch_axis is not None and batch_axis > len(shape):
            raise InputsProblem(f"input '{name}': batch_axis {batch_axis} is beyond its "
                                f"{len(shape) + 1} axes")
        tensors.append(_tensor(name, shape, decl.dtype or spec.dtype, decl, batch_axis,
                               names if any(names) else ()))
    return InputSignature(inputs=tuple(tensors))


def _graph_inputs(path: str) -> list[tuple[str, str, list]]:
    """(name, numpy dtype, dims) of an ONNX file's inputs; a dim is an int, a symbolic name,
    or None (unknown and unnamed). Initializers listed as inputs are left out."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype
    graph = onnx.load(path, load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    out = []
    for inp in graph.input:
        if inp.name in initializers:
            continue
        ttype = inp.type.tensor_type
        dims = []
        for d in ttype.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        out.append((inp.name, str(tensor_dtype_to_np_dtype(ttype.elem_type)), dims))
    return out


def onnx_file_signature(path: str, spec=None) -> InputSignature:
    """The signature of an ONNX file, completed by the spec's `inputs` and `dims`."""
    from pathlib import Path
    graph_inputs = _graph_inputs(path)
    decls = dict(spec.inputs or {}) if spec is not None else {}
    dims = dict(spec.dims or {}) if spec is not None else {}
    file = Path(path).name
    names = [n for n, _, _ in graph_inputs]
    unknown = sorted(set(decls) - set(names))
    if unknown:
        raise InputsProblem(f"{file} has no input named {', '.join(map(repr, unknown))} (its "
                            f"inputs: {', '.join(names) or 'none'})")
    symbolic = {d for _, _, shape in graph_inputs for d in shape if isinstance(d, str)}
    unused = sorted(set(dims) - symbolic)
    if unused:
        raise InputsProblem(f"dims {', '.join(map(repr, unused))} bind no axis of {file} (its "
                            f"named axes: {', '.join(sorted(symbolic)) or 'none'})", "dims")
    tensors = []
    for name, dtype, file_dims in graph_inputs:
        decl = decls.get(name)
        if decl is not None and decl.dtype and decl.dtype != dtype:
            raise InputsProblem(f"input '{name}' is {dtype} in {file}, the spec says "
                                f"{decl.dtype}: drop `dtype` (the file decides)")
        tensors.append(_onnx_tensor(file, name, dtype, file_dims, decl, dims))
    return InputSignature(inputs=tuple(tensors))


def _onnx_tensor(file, name, dtype, file_dims, decl, dims) -> TensorSpec:
    written = decl.batch_axis if decl is not None else "auto"
    if written == "auto":
        open_axes = [i for i, d in enumerate(file_dims)
                     if d is None or (isinstance(d, str) and d not in dims)]
        if open_axes:
            batch_axis = open_axes[0]
        elif file_dims and file_dims[0] == 1 and (decl is None or decl.shape is None):
            batch_axis = 0          # a file exported with a fixed batch of 1
        else:
            batch_axis = None
    else:
        batch_axis = written
        if batch_axis is not None and batch_axis >= len(file_dims):
            raise InputsProblem(f"input '{name}': batch_axis {batch_axis} is beyond its "
                                f"{len(file_dims)} axes {file_dims} in {file}")
    rest = [d for i, d in enumerate(file_dims) if i != batch_axis]
    if decl is not None and decl.shape is not None:
        given = list(decl.shape)
        if len(given) != len(rest):
            raise InputsProblem(f"inputs.{name}.shape {given} has {len(given)} axes; {file} "
                                f"declares {len(rest)} per sample {rest} (batch axis "
                                f"{batch_axis})")
        shape, names = [], []
        for i, (g, d) in enumerate(zip(given, rest)):
            if isinstance(g, str):
                if g not in dims:
                    raise InputsProblem(f"inputs.{name}.shape names '{g}', which `dims` does "
                                        f"not bind: add `dims: {{{g}: N}}`", "dims")
                g = dims[g]
            if isinstance(d, int) and g != d:
                raise InputsProblem(f"inputs.{name}.shape {list(decl.shape)} does not fit "
                                    f"{file}'s shape {file_dims}: axis {i} is fixed at {d}")
            shape.append(g)
            names.append(d if isinstance(d, str) else None)
    else:
        shape, names = [], []
        for i, d in enumerate(rest):
            if isinstance(d, int):
                shape.append(d)
                names.append(None)
            elif isinstance(d, str) and d in dims:
                shape.append(dims[d])
                names.append(d)
            else:
                axis = i if batch_axis is None or i < batch_axis else i + 1
                label = f"'{d}'" if d else "unnamed"
                fix = (f"`dims: {{{d}: N}}` (binds every input's axis named {d}) or "
                       if d else "")
                raise InputsProblem(
                    f"input '{name}' of {file} has a symbolic axis {axis} ({label}) beyond the "
                    f"batch axis {batch_axis}: give {fix}`inputs: {{{name}: {{shape: "
                    f"{[x if isinstance(x, int) else 'N' for x in rest]}}}}}`",
                    "dims" if d else "inputs")
    return _tensor(name, shape, dtype, decl, batch_axis, names if any(names) else ())
