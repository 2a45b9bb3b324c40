"""fp16 for ONNX Runtime: onnxruntime.transformers.float16, tried as a ladder of variants until
one agrees with the fp32 source (see `to_fp16`), each variant judged in a child process (ONNX
Runtime can crash on a converted graph)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.signature import InputSignature
from .cache import file_hash
from .check import TOLERANCE, compare
from .conversion_common import (ConversionError, first_line, intermediate, note,
                                total_conversion_time)
from .inputs import model_inputs

FP16_MAX = 65504.0
JUDGE_BATCH = 1            # fp16 variants are judged at batch 1 (fixed-batch models fit it)
# Ops whose fp16 results overflow (sums of squares, exp, pow) or lose their range (normalisation
# statistics, softmax denominators, resize coordinates): kept fp32 by the op-block variant.
FP16_SENSITIVE_OPS = ("BatchNormalization", "InstanceNormalization", "LayerNormalization",
                      "GroupNormalization", "SimplifiedLayerNormalization",
                      "SkipLayerNormalization", "ReduceMean", "ReduceSum", "ReduceSumSquare",
                      "ReduceL2", "ReduceLogSumExp", "Pow", "Sqrt", "Reciprocal", "Exp", "Log",
                      "Softmax", "LogSoftmax", "Resize")


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
    path, _ = intermediate(context, "ort-optimize", key, "model.opt.onnx", build)
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
        chosen, tried = _judge_variants(src, variants, providers, ref_inputs, tolerance, built)
        if chosen is None:
            raise ConversionError(_no_fp16_variant(tried, variants, tolerance, context.seed))
        tmp.write_text(json.dumps({"chosen": chosen, "tried": tried}))

    key = {"selection": "fp16-variants", "onnxruntime": onnxruntime.__version__,
           "source_sha256": file_hash(src), "tolerance": tolerance,
           "variants": [(n, w) for n, w, _ in variants], "judge_batch": JUDGE_BATCH,
           "seed": context.seed, "signature": signature.model_dump(mode="json"),
           "providers": repr(providers or ["CPUExecutionProvider"])}
    choice_file, _ = context.cache.get_or_build(key, "fp16-choice.json", judge)
    choice = json.loads(Path(choice_file).read_text())
    name = choice["chosen"]
    path = built.get(name) or dict((n, m) for n, _, m in variants)[name]()
    _record_choice(context, choice, tolerance)
    context.model_info["artifact"] = path
    total_conversion_time(context)
    return path


def _judge_variants(src: str, variants, providers, inputs: dict, tolerance: float,
                    built: dict) -> tuple[str | None, list[dict]]:
    """Try the variants in order until one agrees with the source: its name (None: none
    did) and what was tried; the chosen variant's path goes into `built`."""
    reference: dict = {}
    tried = []
    for index, (name, _, make) in enumerate(variants, 1):
        entry, path = _judge_variant({"variant": index, "name": name}, make, src, providers,
                                     inputs, tolerance, reference)
        tried.append(entry)
        if entry["ok"]:
            built[name] = path
            return name, tried
    return None, tried


def _judge_variant(entry: dict, make, src: str, providers, inputs: dict, tolerance: float,
                   reference: dict) -> tuple[dict, str | None]:
    """Build one variant and compare its outputs with the source's (computed once, into
    `reference`): the entry for `tried`, and the path when it was built and ran."""
    try:
        path = make()
    except _Skipped as why:
        return {**entry, "ok": False, "skipped": str(why)}, None
    except Exception as exc:  # noqa: BLE001 - the next variant may convert
        return {**entry, "ok": False, "error": f"conversion failed: {first_line(exc)}"}, None
    try:
        if "outputs" not in reference:
            reference["outputs"] = [np.asarray(o, dtype=np.float32) for o in
                                    _session(src, None).run(None, inputs)]
        got = _run_isolated(path, providers, inputs)
        verdict = compare(got, reference["outputs"], tolerance)
    except Exception as exc:  # noqa: BLE001
        return {**entry, "ok": False, "error": f"running it failed: {first_line(exc)}"}, None
    return {**entry, **{k: verdict[k] for k in ("ok", "max_rel_err", "max_abs_err", "detail")
                        if k in verdict}}, path


def _record_choice(context, choice: dict, tolerance: float) -> None:
    name = choice["chosen"]
    context.model_info["fp16"] = {"variant": name, "tolerance": tolerance,
                                  "judged_on": f"generated inputs, batch {JUDGE_BATCH}, "
                                               f"seed {context.seed}", "tried": choice["tried"]}
    rejected = [t for t in choice["tried"] if t["name"] != name]
    note(context, f"fp16: variant {choice['tried'][-1]['variant']} '{name}' chosen "
                   f"(max relative error {choice['tried'][-1]['max_rel_err']:.3g} <= "
                   f"{tolerance:g})" + ("; rejected: " + "; ".join(
                       f"variant {t['variant']} '{t['name']}' {_outcome(t)}" for t in rejected)
                       if rejected else ""))


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
