"""The ONNX model a cell runs at its precision on ONNX Runtime (fp32 as exported, fp16 and
int8 through their conversions, each cached by content hash), and which precisions ONNX
Runtime runs on which device. What every conversion shares is in conversion_common.py.

fp16: onnxruntime.transformers.float16, tried as a ladder of variants until one agrees with
the fp32 source (see `to_fp16`). int8: ONNX Runtime's documented path, pre-processing
(`quant_pre_process`: symbolic shape inference, ONNX Runtime optimisation, ONNX shape
inference) and then `quantize_dynamic` (the default: weights int8, activations quantized on
the fly) or, with the runtime option `quantization: static`, `quantize_static` calibrated on
generated inputs (see `to_int8`). A failure raises ConversionError: one message naming the
step that failed and what would fix it.

What each conversion did is recorded in context.model_info: `conversion_notes` (one line per
decision), `preprocess`, `quantization`, `fp16` (the chosen variant, the rejected ones and
their errors). The pre-processed and ORT-optimised intermediates are cached too; they are not
in `conversions` (the artifacts a cell may run) but in `intermediates` (cache hit, seconds,
counted in conversion_s) and the notes.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import RuntimeUnavailable
from ..core.signature import InputSignature
from .fp16 import to_fp16
from .int8 import to_int8


def _with_graph_input_types(path: str, signature: InputSignature) -> InputSignature:
    """Float inputs become float16 exactly where the converted graph takes float16."""
    import onnx
    graph = onnx.load(path, load_external_data=False).graph
    types = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    fp16 = onnx.TensorProto.FLOAT16
    return InputSignature(inputs=tuple(
        t.model_copy(update={"dtype": "float16"})
        if np.dtype(t.dtype).kind == "f" and types.get(t.name) == fp16 else t
        for t in signature.inputs))


def onnx_for_precision(src: str, signature: InputSignature, precision: str, device: str,
                       context, providers=None) -> tuple[str, InputSignature]:
    """The ONNX file a cell runs at `precision`, and the signature of what it is fed.
    providers: what the runner's session uses (fp16 variants are judged on them)."""
    check_precision(precision, device)
    if precision == "fp32":
        return src, signature
    if precision == "fp16":
        path = to_fp16(src, signature, context, providers)
        return path, _with_graph_input_types(path, signature)
    return to_int8(src, signature, context), signature


def check_precision(precision: str, device: str) -> None:
    """Raise RuntimeUnavailable for a precision ONNX Runtime does not run on this device."""
    if precision in ("fp32", "fp16"):
        return
    if precision == "int8":
        if device != "cpu":
            raise RuntimeUnavailable("int8 for onnxruntime (dynamic, or static QDQ with "
                                     "`quantization: static`) is measured on the CPU provider; "
                                     "on cuda use runtime tensorrt (int8 with calibration)")
        return
    raise RuntimeUnavailable(f"precision {precision} for onnxruntime: its CPU and CUDA providers "
                             f"have no general bf16 kernels; use fp16, or bf16 with torch")
