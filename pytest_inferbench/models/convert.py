"""Precision conversions of ONNX models for ONNX Runtime, each cached by content hash.

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

import contextlib
import json
import logging
from pathlib import Path

import numpy as np

from ..core.errors import RuntimeUnavailable
from .cache import file_hash
from ..core.signature import InputSignature
from .inputs import model_inputs
from .check import TOLERANCE, compare

FP16_MAX = 65504.0
JUDGE_BATCH = 1            # fp16 variants are judged at batch 1 (fixed-batch models fit it)
CALIBRATION_BATCHES = 8    # static int8: seeded batches of generated inputs the ranges come
CALIBRATION_BATCH = 8      # from (64 samples; the quantizer's cost is per batch, not per sample)
CALIBRATION_SINGLES = 16   # batches of 1 instead, for a model that runs only at batch 1
NOTES_KEY = "pytest_inferbench.notes"   # metadata_props entry: what a cached build did
# Ops whose fp16 results overflow (sums of squares, exp, pow) or lose their range (normalisation
# statistics, softmax denominators, resize coordinates): kept fp32 by the op-block variant.
FP16_SENSITIVE_OPS = ("BatchNormalization", "InstanceNormalization", "LayerNormalization",
                      "GroupNormalization", "SimplifiedLayerNormalization",
                      "SkipLayerNormalization", "ReduceMean", "ReduceSum", "ReduceSumSquare",
                      "ReduceL2", "ReduceLogSumExp", "Pow", "Sqrt", "Reciprocal", "Exp", "Log",
                      "Softmax", "LogSoftmax", "Resize")


class ConversionError(RuntimeError):
    """A conversion step failed; the message names the step and what would fix it."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _note(context, text: str) -> None:
    context.model_info.setdefault("conversion_notes", []).append(text)


def _stamp(path: Path, notes: dict) -> None:
    """Write what a build did into the model's own metadata, so a cache hit can report it."""
    import onnx
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != NOTES_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = NOTES_KEY, json.dumps(notes)
    onnx.save(model, str(path))


def _stamped(path) -> dict:
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == NOTES_KEY:
            return json.loads(prop.value)
    return {}


def _intermediate(context, step: str, key: dict, filename: str, build) -> tuple[Path, dict]:
    """A cached intermediate artifact (not one a cell runs): recorded in the notes, its time
    counted in conversion_s."""
    path, meta = context.cache.get_or_build(key, filename, build)
    context.model_info.setdefault("intermediates", []).append(
        {"step": step, "cache_hit": meta["cache_hit"], "seconds": meta["conversion_s"]})
    return path, meta


def _total_conversion_time(context) -> None:
    info = context.model_info
    info["conversion_s"] = round(sum(c["seconds"] for c in info.get("conversions", []))
                                 + sum(c["seconds"] for c in info.get("intermediates", [])), 4)


@contextlib.contextmanager
def _quiet_quantizer():
    """The quantizer warns through the root logger and logs an optimiser failure (not raised)
    through its own: silence the first, collect the second's errors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    errors: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            errors.append(record.getMessage())

    logger = logging.getLogger("onnxruntime.quantization.shape_inference")
    handler, propagate = Collect(level=logging.ERROR), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield errors
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        root.setLevel(level)


# --- int8 ---------------------------------------------------------------------------------

def _pre_process(src: str, out: Path) -> dict:
    """quant_pre_process as documented; when symbolic shape inference fails (common on graphs
    from Paddle2ONNX and other converters), again without it. Returns what ran."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    failed = {}
    for skip_symbolic in (False, True):
        with _quiet_quantizer() as errors:
            try:
                quant_pre_process(src, str(out), skip_symbolic_shape=skip_symbolic)
            except Exception as exc:  # noqa: BLE001 - reported in our own message below
                failed["symbolic shape inference" if not skip_symbolic else
                       "without symbolic shape inference"] = _first_line(exc)
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
        _stamp(tmp, notes)

    key = {"step": "quant_pre_process", "onnxruntime": onnxruntime.__version__,
           "source_sha256": file_hash(src), "fallback": "skip_symbolic_shape"}
    path, meta = _intermediate(context, "int8-preprocess", key, "model.pre.onnx", build)
    notes = _stamped(path)
    context.model_info["preprocess"] = {**notes, "cache_hit": meta["cache_hit"],
                                        "seconds": meta["conversion_s"]}
    skipped = "".join(f"; {step} skipped ({why})" for step, why in notes["skipped"].items())
    _note(context, f"int8 pre-processing{' (cached)' if meta['cache_hit'] else ''}: "
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
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static
    mode = context.options.get("quantization") or "dynamic"
    pre = preprocess_for_quantization(src, context)
    if mode == "dynamic":
        settings = {"weight_type": "QInt8", "per_channel": False, "subgraphs": True}

        def build(tmp: Path):
            with _quiet_quantizer():
                try:
                    quantize_dynamic(pre, str(tmp), weight_type=QuantType.QInt8,
                                     extra_options={"EnableSubgraph": True})
                except Exception as exc:  # noqa: BLE001
                    raise ConversionError(
                        f"int8 dynamic quantization (onnxruntime.quantization.quantize_dynamic) "
                        f"failed on the pre-processed graph: {_first_line(exc)}. Try "
                        f"`quantization: static`, or re-export the model at opset >= 13 with "
                        f"its weights as initializers") from None
            _require_quantized(tmp, "dynamic")
            _stamp(tmp, {})

        key = {"converter": "onnxruntime.quantization.quantize_dynamic",
               "onnxruntime": onnxruntime.__version__, "source_sha256": file_hash(pre),
               "weight_type": "QInt8", "subgraphs": True}
        path = context.convert("int8-dynamic", key, "model.int8.onnx", build)
    else:
        chosen = _static_settings()
        settings = {"format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8",
                    "per_channel": True, "reduce_range": False, "calibration": {
                        "method": "MinMax", "first_seed": context.seed + 1}}

        def build(tmp: Path):
            notes = {}
            source = pre
            model = onnx.load(pre)
            opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
            if opset < 13:
                try:
                    model = onnx.version_converter.convert_version(model, 13)
                except Exception as exc:  # noqa: BLE001
                    raise ConversionError(
                        f"int8 static quantization: converting the graph from opset {opset} to "
                        f"13 (per-channel Q/DQ needs it) failed: {_first_line(exc)}. Re-export "
                        f"the model at opset >= 13, or use `quantization: dynamic`") from None
                source = str(tmp.with_name(tmp.name + ".opset13.onnx"))
                onnx.save(model, source)
                notes["opset"] = f"{opset} -> 13 (per-channel Q/DQ needs DequantizeLinear's axis)"
            batches, batch, why = _calibration_batches(source, signature, context.seed)
            notes["calibration"] = {"batches": batches, "batch_size": batch}
            if why:
                notes["calibration"]["why"] = why
            try:
                with _quiet_quantizer():
                    quantize_static(source, str(tmp), _calibration_reader(
                        signature, context.seed, batches, batch), **chosen)
            except Exception as exc:  # noqa: BLE001
                raise ConversionError(
                    f"int8 static quantization (onnxruntime.quantization.quantize_static, QDQ, "
                    f"calibrated on {batches} generated batches of {batch}) failed: "
                    f"{_first_line(exc)}. If the model cannot run on the generated inputs, "
                    f"declare their shapes (`inputs:`); else try `quantization: dynamic`") from None
            finally:
                if source != pre:
                    Path(source).unlink(missing_ok=True)
            _require_quantized(tmp, "static")
            _stamp(tmp, notes)

        key = {"converter": "onnxruntime.quantization.quantize_static",
               "onnxruntime": onnxruntime.__version__, "source_sha256": file_hash(pre),
               "settings": settings, "signature": signature.model_dump(mode="json"),
               "calibration": [CALIBRATION_BATCHES, CALIBRATION_BATCH, CALIBRATION_SINGLES]}
        path = context.convert("int8-static", key, "model.int8.static.onnx", build)
        extra = _stamped(path)
        settings["calibration"].update(extra.get("calibration", {}))
        if extra.get("opset"):
            settings["opset"] = extra["opset"]
    context.model_info["quantization"] = {"mode": mode, **settings}
    _note(context, f"int8 {mode}: " + ", ".join(
        f"{k} {v}" for k, v in settings.items() if not isinstance(v, dict)) + (
        ", calibration: {batches} batches of {batch_size}, MinMax".format(
            **settings["calibration"]) if "calibration" in settings else ""))
    _total_conversion_time(context)
    return str(path)


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
                                       f"{_first_line(exc)[:160]}"


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


# --- fp16 ---------------------------------------------------------------------------------

def _ort_optimized(src: str, context) -> str:
    """The source after ONNX Runtime's basic (provider-independent) graph optimisation:
    constants folded into initializers, BatchNormalization/Add/Mul fused into Conv."""
    import onnxruntime as ort

    def build(tmp: Path):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(tmp)
        ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])

    key = {"step": "ort-optimize", "level": "basic", "onnxruntime": ort.__version__,
           "source_sha256": file_hash(src)}
    path, _ = _intermediate(context, "ort-optimize", key, "model.opt.onnx", build)
    return str(path)


def _session(path: str, providers):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=providers or ["CPUExecutionProvider"])


_ISOLATED_RUN = """
import sys, numpy as np, onnxruntime as ort
path, providers, data, out = sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4]
s = ort.InferenceSession(path, providers=providers)
types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
want = {i.name: types.get(i.type) for i in s.get_inputs()}
with np.load(data) as f:
    feed = {k: (f[k].astype(want[k]) if f[k].dtype.kind == "f" and want.get(k) else f[k])
            for k in f.files}
np.savez(out, *[np.asarray(o, dtype=np.float32) for o in s.run(None, feed)])
"""


class _Crashed(RuntimeError):
    pass


def _run_isolated(path: str, providers, inputs: dict) -> list[np.ndarray]:
    """Outputs of a converted graph computed in a child process: ONNX Runtime 1.32 crashes
    (SIGSEGV) creating a session for some converted graphs (torchvision's ViT in plain fp16),
    and a crash must reject that variant, not end the pytest session with every result."""
    import subprocess
    import sys
    import tempfile
    names = [p if isinstance(p, str) else p[0] for p in (providers or ["CPUExecutionProvider"])]
    with tempfile.TemporaryDirectory(prefix="inferbench-judge-") as tmp:
        data, out = Path(tmp, "in.npz"), Path(tmp, "out.npz")
        np.savez(data, **inputs)
        done = subprocess.run([sys.executable, "-c", _ISOLATED_RUN, path, ",".join(names),
                               str(data), str(out)], capture_output=True, text=True)
        if done.returncode < 0:
            import signal
            raise _Crashed(f"ONNX Runtime crashed ({signal.Signals(-done.returncode).name}) "
                           f"loading or running it")
        if done.returncode:
            lines = done.stderr.strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")
        with np.load(out) as f:
            return [f[f"arr_{i}"] for i in range(len(f.files))]


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
             "tensor(double)": np.float64}


def _fed(session, inputs: dict) -> dict:
    """Float inputs cast to what the graph's inputs take (float16 where the variant made them)."""
    types = {i.name: _NP_TYPES.get(i.type) for i in session.get_inputs()}
    return {k: (v.astype(types[k]) if v.dtype.kind == "f" and types.get(k) else v)
            for k, v in inputs.items()}


def _fp16_unsafe_nodes(path: str, inputs: dict) -> list[str]:
    """Nodes whose fp32 activations on `inputs` (with a 2x margin) or whose float initializers
    exceed fp16's largest finite value."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    model = onnx.load(path)
    graph = model.graph
    big_weights = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT
                   and np.abs(numpy_helper.to_array(i)).max(initial=0) > FP16_MAX}
    flagged = {n.name for n in graph.node if n.name and big_weights & set(n.input)}
    produced = [(out, n.name) for n in graph.node if n.name for out in n.output if out]
    present = {o.name for o in graph.output}
    graph.output.extend(onnx.ValueInfoProto(name=o) for o, _ in produced if o not in present)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                   providers=["CPUExecutionProvider"])
    values = session.run([o for o, _ in produced], _fed(session, inputs))
    for (_, node), value in zip(produced, values):
        value = np.asarray(value)
        if value.dtype.kind == "f" and value.size:
            finite = value[np.isfinite(value)]
            if finite.size and float(np.abs(finite).max()) > FP16_MAX / 2:
                flagged.add(node)
    return sorted(flagged)


def _fp16_variants(src: str, context, inputs: dict):
    """(name, what it does, build) in the order tried; build() -> path or raises."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    block_ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_SENSITIVE_OPS))
    optimized: dict = {}

    def opt():
        if "path" not in optimized:
            optimized["path"] = _ort_optimized(src, context)
        return optimized["path"]

    def plain():
        return _fp16_artifact(context, "fp16", src, keep_io_types=False)

    def ort_optimized():
        return _fp16_artifact(context, "fp16-ort-optimized", opt(), keep_io_types=False)

    def op_block():
        return _fp16_artifact(context, "fp16-op-block", opt(), keep_io_types=True,
                              op_block_list=block_ops)

    def node_block():
        nodes = _fp16_unsafe_nodes(opt(), inputs)
        if not nodes:
            raise _Skipped("no node's activations or weights exceed fp16's range on the "
                           "generated inputs: nothing more to keep in fp32")
        return _fp16_artifact(context, "fp16-node-block", opt(), keep_io_types=True,
                              op_block_list=block_ops, node_block_list=nodes)

    return (("plain", "the whole graph in fp16, inputs and outputs too", plain),
            ("ort-optimized", "the graph after ONNX Runtime's basic optimisation (constants "
             "folded, BatchNormalization fused into Conv), all in fp16", ort_optimized),
            ("op-block", "inputs/outputs kept fp32 (keep_io_types), ops that overflow or lose "
             f"range in fp16 kept fp32 (op_block_list: {', '.join(FP16_SENSITIVE_OPS)})",
             op_block),
            ("node-block", "as op-block, and nodes whose fp32 activations or weights exceed "
             "fp16's range kept fp32 (node_block_list)", node_block))


class _Skipped(Exception):
    pass


def _fp16_artifact(context, step: str, source: str, **options) -> str:
    import onnx
    import onnxruntime
    from onnxruntime.transformers.float16 import convert_float_to_float16

    def build(tmp: Path):
        onnx.save(convert_float_to_float16(onnx.load(source), **options), str(tmp))

    key = {"converter": "onnxruntime.transformers.float16", "onnxruntime": onnxruntime.__version__,
           "source_sha256": file_hash(source),
           **{k: (sorted(v) if isinstance(v, (list, tuple)) else v) for k, v in options.items()}}
    return str(context.convert(step, key, "model.fp16.onnx", build))


def to_fp16(src: str, signature: InputSignature, context, providers=None) -> str:
    """fp16 by onnxruntime.transformers.float16, the first variant that agrees with the source.

    Variants, in order (most fp16 first): plain; the ORT-optimised graph (a BatchNormalization
    running variance beyond 65504, as PP-OCR's detector has, exists in fp16 only unfused; and
    the converter casts Constant-node values whatever their consumer, so blocking an op keeps
    its weights fp32 only once constants are initializers); op-block (keep_io_types and
    FP16_SENSITIVE_OPS in fp32); node-block (also the nodes whose fp32 activations on the
    generated inputs, or weights, exceed fp16's range). Each is judged with check.compare
    against the fp32 source on the inputs the cell's numerical check uses at batch 1
    (signature.generate(1, seed)), at TOLERANCE["fp16"], on the runner's providers; the first
    within it is used. The choice is cached; the cell's own check keeps the final word.
    """
    import onnxruntime

    # the entry's own tolerance and real inputs (`data`) where it gives them, as the cell's
    # numerical check will use
    tolerance = getattr(context, "check_tolerance", None) or TOLERANCE["fp16"]
    inputs = model_inputs(getattr(context, "model", None), signature, JUDGE_BATCH,
                          context.seed)
    ref_inputs = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
                  for k, v in inputs.items()}
    variants = _fp16_variants(src, context, ref_inputs)
    built: dict[str, str] = {}

    def judge(tmp: Path):
        reference = None
        tried = []
        for index, (name, what, make) in enumerate(variants, 1):
            entry = {"variant": index, "name": name}
            try:
                path = make()
            except _Skipped as why:
                tried.append({**entry, "ok": False, "skipped": str(why)})
                continue
            except Exception as exc:  # noqa: BLE001 - the next variant may convert
                tried.append({**entry, "ok": False, "error": f"conversion failed: "
                                                             f"{_first_line(exc)}"})
                continue
            try:
                if reference is None:
                    reference = [np.asarray(o, dtype=np.float32) for o in
                                 _session(src, None).run(None, ref_inputs)]
                got = _run_isolated(path, providers, ref_inputs)
                verdict = compare(got, reference, tolerance)
            except Exception as exc:  # noqa: BLE001
                tried.append({**entry, "ok": False, "error": f"running it failed: "
                                                             f"{_first_line(exc)}"})
                continue
            tried.append({**entry, **{k: verdict[k] for k in
                                      ("ok", "max_rel_err", "max_abs_err", "detail")
                                      if k in verdict}})
            if verdict["ok"]:
                built[name] = path
                tmp.write_text(json.dumps({"chosen": name, "tried": tried}))
                return
        raise ConversionError(_no_fp16_variant(tried, variants, tolerance, context.seed))

    key = {"selection": "fp16-variants", "onnxruntime": onnxruntime.__version__,
           "source_sha256": file_hash(src), "tolerance": tolerance,
           "variants": [(n, w) for n, w, _ in variants], "judge_batch": JUDGE_BATCH,
           "seed": context.seed, "signature": signature.model_dump(mode="json"),
           "providers": repr(providers or ["CPUExecutionProvider"])}
    choice_file, _ = context.cache.get_or_build(key, "fp16-choice.json", judge)
    choice = json.loads(Path(choice_file).read_text())
    name = choice["chosen"]
    path = built.get(name) or dict((n, m) for n, _, m in variants)[name]()
    context.model_info["fp16"] = {"variant": name, "tolerance": tolerance,
                                  "judged_on": f"generated inputs, batch {JUDGE_BATCH}, "
                                               f"seed {context.seed}", "tried": choice["tried"]}
    rejected = [t for t in choice["tried"] if t["name"] != name]
    _note(context, f"fp16: variant {choice['tried'][-1]['variant']} '{name}' chosen "
                   f"(max relative error {choice['tried'][-1]['max_rel_err']:.3g} <= "
                   f"{tolerance:g})" + ("; rejected: " + "; ".join(
                       f"variant {t['variant']} '{t['name']}' {_outcome(t)}" for t in rejected)
                       if rejected else ""))
    context.model_info["artifact"] = path
    _total_conversion_time(context)
    return path


def _outcome(entry: dict) -> str:
    if "max_rel_err" in entry:
        return f"max relative error {entry['max_rel_err']:.3g}"
    return entry.get("skipped") or entry.get("error") or entry.get("detail", "failed")


def _no_fp16_variant(tried: list, variants, tolerance: float, seed: int) -> str:
    lines = "; ".join(f"variant {t['variant']} '{t['name']}' ({variants[t['variant'] - 1][1]}): "
                      f"{_outcome(t)}" for t in tried)
    return (f"fp16 conversion: no variant agrees with the fp32 source within tolerance "
            f"{tolerance:g} (max relative error on generated inputs, batch {JUDGE_BATCH}, "
            f"seed {seed}). Tried {lines}. What you can do: benchmark this model at fp32 (or "
            f"int8), or on the CUDA provider, where fp16 kernels are native; if only some "
            f"inputs are off, declare input values closer to real data in `inputs:`")


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
    if precision == "fp32":
        return src, signature
    if precision == "fp16":
        path = to_fp16(src, signature, context, providers)
        return path, _with_graph_input_types(path, signature)
    if precision == "int8":
        if device != "cpu":
            raise RuntimeUnavailable("int8 for onnxruntime (dynamic, or static QDQ with "
                                     "`quantization: static`) is measured on the CPU provider; "
                                     "on cuda use runtime tensorrt (int8 with calibration)")
        return to_int8(src, signature, context), signature
    raise RuntimeUnavailable(f"precision {precision} for onnxruntime: its CPU and CUDA providers "
                             f"have no general bf16 kernels; use fp16, or bf16 with torch")
