"""int8 for ONNX Runtime, ONNX Runtime's documented path: pre-processing (`quant_pre_process`:
symbolic shape inference, ONNX Runtime optimisation, ONNX shape inference) and then
`quantize_dynamic` (the default: weights int8, activations quantized on the fly) or, with the
runtime option `quantization: static`, `quantize_static` calibrated on generated inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.signature import InputSignature
from .cache import file_hash
from .conversion_common import (
    ConversionError,
    first_line,
    intermediate,
    note,
    quiet_quantizer,
    stamp,
    stamped,
    total_conversion_time,
)

CALIBRATION_BATCHES = 8    # static int8: seeded batches of generated inputs the ranges come
CALIBRATION_BATCH = 8      # from (64 samples; the quantizer's cost is per batch, not per sample)
CALIBRATION_SINGLES = 16   # batches of 1 instead, for a model that runs only at batch 1


def _pre_process(src: str, out: Path) -> dict:
    """quant_pre_process as documented; when symbolic shape inference fails (common on graphs
    from Paddle2ONNX and other converters), again without it. Returns what ran."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    failed = {}
    for skip_symbolic in (False, True):
        with quiet_quantizer() as errors:
            try:
                quant_pre_process(src, str(out), skip_symbolic_shape=skip_symbolic)
            except Exception as exc:  # noqa: BLE001 - reported in our own message below
                failed["symbolic shape inference" if not skip_symbolic else
                       "without symbolic shape inference"] = first_line(exc)
                continue
        ran, skipped = [], {}
        if skip_symbolic:
            skipped["symbolic shape inference"] = failed["symbolic shape inference"]
        else:
            ran.append("symbolic shape inference")
        optimiser = next((e for e in errors if "Optimization Failed" in e), None)
        if optimiser:
            skipped["ONNX Runtime optimisation"] = optimiser.strip().splitlines()[0]
        else:
            ran.append("ONNX Runtime optimisation (basic)")
        ran.append("ONNX shape inference")
        return {"ran": ran, "skipped": skipped}
    raise ConversionError(
        f"int8 pre-processing (onnxruntime.quantization.shape_inference.quant_pre_process) "
        f"failed: {'; '.join(f'{k}: {v}' for k, v in failed.items())}. The quantizer needs a "
        f"graph ONNX's shape inference can type: check the file with "
        f"onnx.checker.check_model(path, full_check=True), or re-export it at opset >= 13")


def preprocess_for_quantization(src: str, context) -> str:
    """The source after ONNX Runtime's quantization pre-processing (cached)."""
    import onnxruntime

    def build(tmp: Path):
        notes = _pre_process(src, tmp)
        stamp(tmp, notes)

    key = {"step": "quant_pre_process", "onnxruntime": onnxruntime.__version__,
           "source_sha256": file_hash(src), "fallback": "skip_symbolic_shape"}
    path, meta = intermediate(context, "int8-preprocess", key, "model.pre.onnx", build)
    notes = stamped(path)
    context.model_info["preprocess"] = {**notes, "cache_hit": meta["cache_hit"],
                                        "seconds": meta["conversion_s"]}
    skipped = "".join(f"; {step} skipped ({why})" for step, why in notes["skipped"].items())
    note(context, f"int8 pre-processing{' (cached)' if meta['cache_hit'] else ''}: "
                   f"{', '.join(notes['ran'])}{skipped}")
    return str(path)


def _static_settings():
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    return {"quant_format": QuantFormat.QDQ, "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8, "per_channel": True, "reduce_range": False,
            "calibrate_method": CalibrationMethod.MinMax}


def to_int8(src: str, signature: InputSignature, context) -> str:
    """int8 for ONNX Runtime's CPU provider: pre-processing, then dynamic or static.

    dynamic (default): quantize_dynamic, weights QInt8 per tensor, activations quantized per
    batch at run time; no calibration, the documented choice for transformers and RNNs.
    If/Loop subgraphs are quantized too (EnableSubgraph; silero-vad computes inside an If).

    static (`quantization: static`): quantize_static in QDQ format (the format ONNX Runtime
    recommends since 1.11 and the one its CPU kernels and the TensorRT provider consume), with
    ranges from MinMax calibration on CALIBRATION_BATCHES batches of CALIBRATION_BATCH samples
    generated from the signature (seeds seed+1.., never the seed the numerical check uses;
    CALIBRATION_SINGLES batches of 1 for a model that runs only at batch 1).
    Choices, following quantize_static's "Choosing parameters for CPU inference":
    - activations QUInt8 (asymmetric: post-ReLU activations are non-negative and use the whole
      range), weights QInt8 (symmetric);
    - per_channel=True: depthwise convolutions (MobileNet-style backbones, PP-OCR's) have
      weight ranges that differ by orders of magnitude between output channels, which one
      per-tensor scale crushes. Per-channel Q/DQ needs DequantizeLinear's `axis` (opset 13):
      a graph below opset 13 is converted to 13 first (onnx.version_converter);
    - reduce_range=False: 8-bit weights, as VNNI-capable CPUs run them (7-bit weights avoid
      u8s8 saturation on CPUs without VNNI, but were further from fp32 on PP-OCR's classifier
      on an AVX2 CPU without VNNI: 0.09 against 0.055); a saturating CPU fails the check;
    - MinMax calibration: Entropy and Percentile were no closer on generated inputs, and
      MinMax needs no histogram pass.
    """
    mode = context.options.get("quantization") or "dynamic"
    pre = preprocess_for_quantization(src, context)
    if mode == "dynamic":
        path, settings = _dynamic(pre, context)
    else:
        path, settings = _static(pre, signature, context)
    context.model_info["quantization"] = {"mode": mode, **settings}
    note(context, f"int8 {mode}: " + ", ".join(
        f"{k} {v}" for k, v in settings.items() if not isinstance(v, dict)) + (
        ", calibration: {batches} batches of {batch_size}, MinMax".format(
            **settings["calibration"]) if "calibration" in settings else ""))
    total_conversion_time(context)
    return str(path)


def _dynamic(pre: str, context) -> tuple[Path, dict]:
    """quantize_dynamic of the pre-processed graph (cached): the path and its settings."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic
    settings = {"weight_type": "QInt8", "per_channel": False, "subgraphs": True}

    def build(tmp: Path):
        with quiet_quantizer():
            try:
                quantize_dynamic(pre, str(tmp), weight_type=QuantType.QInt8,
                                 extra_options={"EnableSubgraph": True})
            except Exception as exc:  # noqa: BLE001
                raise ConversionError(
                    f"int8 dynamic quantization (onnxruntime.quantization.quantize_dynamic) "
                    f"failed on the pre-processed graph: {first_line(exc)}. Try "
                    f"`quantization: static`, or re-export the model at opset >= 13 with "
                    f"its weights as initializers") from None
        _require_quantized(tmp, "dynamic")
        stamp(tmp, {})

    key = {"converter": "onnxruntime.quantization.quantize_dynamic",
           "onnxruntime": onnxruntime.__version__, "source_sha256": file_hash(pre),
           "weight_type": "QInt8", "subgraphs": True}
    return context.convert("int8-dynamic", key, "model.int8.onnx", build), settings


def _static(pre: str, signature: InputSignature, context) -> tuple[Path, dict]:
    """quantize_static (QDQ, calibrated) of the pre-processed graph (cached): the path and
    its settings, with what the build recorded (calibration batches, an opset conversion)."""
    import onnxruntime
    settings = {"format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8",
                "per_channel": True, "reduce_range": False, "calibration": {
                    "method": "MinMax", "first_seed": context.seed + 1}}

    def build(tmp: Path):
        source, notes = _at_opset_13(pre, tmp)
        try:
            notes["calibration"] = _quantize_static(source, tmp, signature, context.seed)
        finally:
            if source != pre:
                Path(source).unlink(missing_ok=True)
        _require_quantized(tmp, "static")
        stamp(tmp, notes)

    key = {"converter": "onnxruntime.quantization.quantize_static",
           "onnxruntime": onnxruntime.__version__, "source_sha256": file_hash(pre),
           "settings": settings, "signature": signature.model_dump(mode="json"),
           "calibration": [CALIBRATION_BATCHES, CALIBRATION_BATCH, CALIBRATION_SINGLES]}
    path = context.convert("int8-static", key, "model.int8.static.onnx", build)
    extra = stamped(path)
    settings["calibration"].update(extra.get("calibration", {}))
    if extra.get("opset"):
        settings["opset"] = extra["opset"]
    return path, settings


def _at_opset_13(pre: str, tmp: Path) -> tuple[str, dict]:
    """The graph to quantize: `pre` itself, or a copy converted to opset 13 beside `tmp`
    (per-channel Q/DQ needs DequantizeLinear's `axis`), with a note saying so."""
    import onnx
    model = onnx.load(pre)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= 13:
        return pre, {}
    try:
        model = onnx.version_converter.convert_version(model, 13)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(
            f"int8 static quantization: converting the graph from opset {opset} to "
            f"13 (per-channel Q/DQ needs it) failed: {first_line(exc)}. Re-export "
            f"the model at opset >= 13, or use `quantization: dynamic`") from None
    source = str(tmp.with_name(tmp.name + ".opset13.onnx"))
    onnx.save(model, source)
    return source, {"opset": f"{opset} -> 13 (per-channel Q/DQ needs DequantizeLinear's axis)"}


def _quantize_static(source: str, tmp: Path, signature: InputSignature, seed: int) -> dict:
    """quantize_static into `tmp`, calibrated on generated batches; returns how it was
    calibrated."""
    from onnxruntime.quantization import quantize_static
    batches, batch, why = _calibration_batches(source, signature, seed)
    calibration = {"batches": batches, "batch_size": batch}
    if why:
        calibration["why"] = why
    try:
        with quiet_quantizer():
            quantize_static(source, str(tmp), _calibration_reader(signature, seed, batches, batch),
                            **_static_settings())
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(
            f"int8 static quantization (onnxruntime.quantization.quantize_static, QDQ, "
            f"calibrated on {batches} generated batches of {batch}) failed: "
            f"{first_line(exc)}. If the model cannot run on the generated inputs, "
            f"declare their shapes (`inputs:`); else try `quantization: dynamic`") from None
    return calibration


_INT8_OPS = ("QuantizeLinear", "DequantizeLinear", "QAttention", "QGemm",
             "QEmbedLayerNormalization")


def _quantized_nodes(graph) -> int:
    """Nodes that compute in int8 (or quantize/dequantize for it), subgraphs included."""
    count = 0
    for node in graph.node:
        op = node.op_type
        if op in _INT8_OPS or op.startswith(("QLinear", "DynamicQuantize")) \
                or op.endswith("Integer"):
            count += 1
        for attr in node.attribute:
            if attr.HasField("g"):
                count += _quantized_nodes(attr.g)
            for sub in attr.graphs:
                count += _quantized_nodes(sub)
    return count


def _require_quantized(path: Path, mode: str) -> None:
    """An int8 cell whose graph quantized nothing would time the fp32 graph under int8's name."""
    import onnx
    graph = onnx.load(str(path)).graph
    if _quantized_nodes(graph) > 0:
        return
    control = sorted({n.op_type for n in graph.node if n.op_type in ("If", "Loop", "Scan")})
    if control and mode == "static":
        why = (f"its computation sits in {'/'.join(control)} subgraphs, which static QDQ "
               f"quantization does not enter (ONNX Runtime quantizes subgraphs in dynamic mode "
               f"only); use `quantization: dynamic`, or benchmark it at fp32 or fp16")
    else:
        why = ("ONNX Runtime's quantizer has no int8 form for any of its ops; benchmark it at "
               "fp32 or fp16")
    raise ConversionError(f"int8 {mode} quantization quantized no node, so an int8 cell would "
                          f"measure the fp32 graph: {why}")


def _calibration_batches(source: str, signature: InputSignature, seed: int):
    """(batches, batch size, why not the default): CALIBRATION_BATCHES of CALIBRATION_BATCH,
    or CALIBRATION_SINGLES of 1 for a model that does not run at CALIBRATION_BATCH (a fixed
    recurrent state, a batch axis the file pins to 1)."""
    import onnxruntime as ort
    try:
        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        session.run(None, _float32(signature.generate(CALIBRATION_BATCH, seed=seed + 1)))
        return CALIBRATION_BATCHES, CALIBRATION_BATCH, None
    except Exception as exc:  # noqa: BLE001 - the model runs at batch 1 only, or not at all
        return CALIBRATION_SINGLES, 1, f"it does not run at batch {CALIBRATION_BATCH}: " \
                                       f"{first_line(exc)[:160]}"


def _float32(inputs: dict) -> dict:
    return {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in inputs.items()}


def _calibration_reader(signature: InputSignature, seed: int, batches: int, batch: int):
    """`batches` seeded batches of `batch` generated from the signature (seeds seed+1 ..)."""
    from onnxruntime.quantization import CalibrationDataReader

    class GeneratedBatches(CalibrationDataReader):
        def __init__(self):
            self.seeds = iter(range(seed + 1, seed + 1 + batches))

        def get_next(self):
            s = next(self.seeds, None)
            return None if s is None else _float32(signature.generate(batch, seed=s))

    return GeneratedBatches()
