"""Precision conversions of ONNX models for ONNX Runtime, each cached by content hash.

fp16: onnxruntime.transformers.float16 (inputs and outputs become float16 too, as a deployed
fp16 model takes them). int8: onnxruntime.quantization.quantize_dynamic (weights int8,
activations quantized on the fly; the CPU deployment path ONNX Runtime documents).
"""

from __future__ import annotations

from pathlib import Path

from ..runtimes.base import RuntimeUnavailable
from .cache import file_hash
from .signature import InputSignature, TensorSpec


def to_fp16(src: str, context) -> str:
    import onnx
    import onnxruntime
    from onnxruntime.transformers.float16 import convert_float_to_float16

    def build(tmp: Path):
        model = onnx.load(src)
        onnx.save(convert_float_to_float16(model, keep_io_types=False), str(tmp))

    key = {"converter": "onnxruntime.transformers.float16", "onnxruntime": onnxruntime.__version__,
           "source_sha256": file_hash(src), "keep_io_types": False}
    return str(context.convert("fp16", key, "model.fp16.onnx", build))


def to_int8_dynamic(src: str, context) -> str:
    import logging

    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def build(tmp: Path):
        # quantize_dynamic warns through the root logger about pre-processing; keep it quiet
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(src, str(tmp), weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)

    key = {"converter": "onnxruntime.quantization.quantize_dynamic",
           "onnxruntime": onnxruntime.__version__, "source_sha256": file_hash(src),
           "weight_type": "QInt8"}
    return str(context.convert("int8-dynamic", key, "model.int8.onnx", build))


def onnx_for_precision(src: str, signature: InputSignature, precision: str, device: str,
                       context) -> tuple[str, InputSignature]:
    if precision == "fp32":
        return src, signature
    if precision == "fp16":
        path = to_fp16(src, context)
        return path, InputSignature(inputs=tuple(
            TensorSpec(name=t.name, shape=t.shape, high=t.high,
                       dtype="float16" if t.dtype == "float32" else t.dtype)
            for t in signature.inputs))
    if precision == "int8":
        if device != "cpu":
            raise RuntimeUnavailable("int8 for onnxruntime is dynamic quantization, a CPU path; "
                                     "on cuda use runtime tensorrt (int8 with calibration)")
        return to_int8_dynamic(src, context), signature
    raise RuntimeUnavailable(f"precision {precision} for onnxruntime: its CPU and CUDA providers "
                             f"have no general bf16 kernels; use fp16, or bf16 with torch")
