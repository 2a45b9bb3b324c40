"""Every CPU runtime and precision end to end, conversions, the numerical check, GPU skips."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from conftest import FAST, measured_enough
from pytest_inferbench.measure.gpu_monitor import GpuMonitor

HAS_CUDA = torch.cuda.is_available()


def results(pytester, name="run.json"):
    doc = json.loads((pytester.path / name).read_text())
    return {r["id"].split("::", 1)[1]: r for r in doc["results"]}


def test_every_cpu_runtime_and_precision(pytester):
    pytester.makefile(".yaml", bench_rt=f"""
        name: rt
        defaults: {{{FAST}}}
        benchmarks:
          - model: mlp-tiny
            runtime: [torch, torchscript]
            precision: [fp32, bf16]
            batch_size: [1, 3]
          - model: mlp-tiny
            runtime: onnxruntime
            precision: [fp32, fp16, int8]
            batch_size: [1, 3]
          - model: mlp-tiny
            runtime: [{{name: onnxruntime, graph_optimization: disabled}}, torch]
            threads: 1
        """)
    result = pytester.runpytest("--infer-json", "run.json")
    result.assert_outcomes(passed=16)
    by_id = results(pytester)
    for rid, r in by_id.items():
        assert measured_enough(r), rid
        check = r["model"]["check"]
        if rid.startswith("mlp-tiny[torch-cpu-fp32-"):
            assert check == {"reference": True}    # torch eager fp32 on cpu is the reference
        else:  # every other cell was compared with torch eager fp32 on the same inputs
            assert check["ok"] and check["max_rel_err"] <= check["tolerance"], rid
    int8 = by_id["mlp-tiny[onnxruntime-cpu-int8-bs3-offline]"]["model"]
    assert [c["step"] for c in int8["conversions"]] == ["onnx-export", "int8-dynamic"]
    assert int8["artifact"].endswith("model.int8.onnx")
    fp16 = by_id["mlp-tiny[onnxruntime-cpu-fp16-bs1-offline]"]["model"]
    assert fp16["inputs"]["x"]["dtype"] == "float16"
    assert fp16["check"]["max_rel_err"] > 0          # fp16 really ran in fp16
    ts = by_id["mlp-tiny[torchscript-cpu-fp32-bs3-offline]"]["model"]
    assert ts["conversions"][0]["step"] == "torchscript-trace"
    opt = by_id["mlp-tiny[onnxruntime(opt=disabled)-cpu-fp32-bs1-t1-offline]"]["runtime"]
    assert opt["graph_optimization"] == "disabled" and opt["intra_op_threads"] == 1
    assert by_id["mlp-tiny[torch-cpu-fp32-bs1-t1-offline]"]["runtime"]["intra_op_threads"] == 1


def test_torch_compile(pytester):
    # In a subprocess: torch.compile registers operator libraries that cannot be imported twice,
    # and pytester's in-process runs unload what they imported.
    pytester.makefile(".yaml", bench_tc=f"""
        name: tc
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: mlp-tiny, runtime: [torch_compile, {{name: torch_compile, mode: max-autotune-no-cudagraphs}}]}}
        """)
    result = pytester.runpytest_subprocess("--infer-json", "run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    by_id = results(pytester)
    compiled = by_id["mlp-tiny[torch_compile-cpu-fp32-bs1-offline]"]
    assert compiled["runtime"]["compile_mode"] == "default"
    assert compiled["runtime"]["first_call_s"] > 0 and compiled["model"]["check"]["ok"]
    tuned = by_id["mlp-tiny[torch_compile(mode=max-autotune-no-cudagraphs)-cpu-fp32-bs1-offline]"]
    assert tuned["runtime"]["compile_mode"] == "max-autotune-no-cudagraphs"


def test_unsupported_combinations_skip_with_reasons(pytester):
    pytester.makefile(".yaml", bench_skip=f"""
        name: skip
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: mlp-tiny, runtime: onnxruntime, precision: bf16}}
          - {{model: mlp-tiny, runtime: torch, precision: int8}}
          - {{model: mlp-tiny, runtime: torch, precision: fp16}}
          - {{model: mlp-tiny, runtime: {{name: onnxruntime, provider: tensorrt}}}}
        """)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines_random([
        "*precision bf16 for onnxruntime: its CPU and CUDA providers have no general bf16*",
        "*precision int8 is not available for runtime torch*",
        "*precision fp16 for torch on cpu*",
        "*provider tensorrt needs a cuda device*"])


@pytest.mark.gpu
@pytest.mark.skipif(HAS_CUDA, reason="checks the skips of a machine without a GPU")
def test_gpu_cells_skip_here_with_the_reason(pytester):
    pytester.makefile(".yaml", bench_gpu=f"""
        name: gpu
        defaults: {{{FAST}}}
        benchmarks:
          - model: mlp-tiny
            device: cuda
            runtime: [torch, torchscript, torch_compile, onnxruntime,
                      {{name: onnxruntime, provider: tensorrt}}]
            precision: fp16
        """)
    result = pytester.runpytest("-rs", "--infer-json", "run.json")
    result.assert_outcomes(skipped=5)
    for r in results(pytester).values():
        assert r["status"] == "skipped"
        assert ("no CUDA device" in r["reason"] or "onnxruntime has no" in r["reason"]), r["reason"]


def test_numerical_check_catches_a_wrong_artifact(pytester):
    pytester.makefile(".yaml", bench_n=f"""
        name: n
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: mlp-tiny, runtime: onnxruntime}}
        """)
    pytester.runpytest("--infer-json", "good.json").assert_outcomes(passed=1)
    (good,) = results(pytester, "good.json").values()
    artifact = good["model"]["artifact"]
    # corrupt the cached export: scale one weight matrix, as a broken converter might
    model = onnx.load(artifact)
    init = model.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 3.0, init.name))
    onnx.save(model, artifact)
    result = pytester.runpytest("--infer-json", "bad.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*outputs disagree with the source model: max relative error*"
                                 "> tolerance 0.01*against torch eager cpu fp32*"])
    (bad,) = results(pytester, "bad.json").values()
    assert bad["status"] == "failed" and "max relative error" in bad["reason"]


def test_parallel_workers_share_conversions(pytester):
    pytester.makefile(".yaml", bench_par=f"""
        name: par
        defaults: {{{FAST}}}
        benchmarks:
          - model: {{family: mlp, hidden: 512, layers: 4}}
            runtime: onnxruntime
            precision: [int8, fp16]
            batch_size: [1, 2, 4, 8]
        """)
    result = pytester.runpytest("-n", "2", "--infer-json", "run.json")
    result.assert_outcomes(passed=8)
    by = results(pytester)
    artifacts = {r["model"]["artifact"] for r in by.values()}
    assert len(artifacts) == 2            # one int8 and one fp16 model for all eight cells
    exports = [r["model"]["conversions"][0] for r in by.values()]
    assert sum(not e["cache_hit"] for e in exports) == 1   # exported once, by one worker


def test_gpu_monitor_reports_not_available_without_nvml():
    monitor = GpuMonitor("cuda:0")
    monitor.start()
    stats = monitor.stop()
    if HAS_CUDA and stats["available"]:
        assert stats["samples"] >= 1 and stats["name"]
    else:
        assert stats["available"] is False and stats["reason"]


def test_device_fixture(pytester):
    pytester.makepyfile(test_dev="""
        import pytest

        def test_default_is_cuda(inferbench_device):
            assert inferbench_device.type == "cuda"

        @pytest.mark.parametrize("inferbench_device", ["cpu"], indirect=True)
        def test_cpu(inferbench_device):
            assert inferbench_device.type == "cpu"
        """)
    result = pytester.runpytest("-rs")
    if HAS_CUDA:
        result.assert_outcomes(passed=2)
    else:
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines(["*device cuda: no CUDA device visible*"])


def test_a_failed_conversion_fails_only_its_cell_with_the_converters_reason(pytester):
    pytester.makepyfile(odd_models="""
        import torch

        class Eigh(torch.nn.Module):
            def forward(self, x):
                m = x.reshape(-1, 4, 4)
                return torch.linalg.eigh(m @ m.transpose(1, 2)).eigenvalues

        def make():
            return Eigh(), {"x": [16]}
        """)
    pytester.makefile(".yaml", bench_conv=f"""
        name: conv
        defaults: {{{FAST}}}
        benchmarks:
          - {{model: "odd_models:make", runtime: [torch, onnxruntime]}}
        """)
    # a subprocess: the dynamo exporter loads torch._inductor, which cannot load twice
    result = pytester.runpytest_subprocess("--infer-json", "run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ONNX export failed with both exporters*"])
    by = results(pytester)
    assert by["make[torch-cpu-fp32-bs1-offline]"]["status"] == "passed"
    failed = by["make[onnxruntime-cpu-fp32-bs1-offline]"]
    assert failed["status"] == "failed"
    assert "'aten::linalg_eigh' to ONNX opset version 17 is not supported" in failed["reason"]
