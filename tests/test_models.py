"""Generated families, user model files, ONNX export and the artifact cache (real conversions)."""

import json
import multiprocessing
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import FAST
from pytest_inferbench.models.artifacts import onnx_model, torch_module
from pytest_inferbench.models.cache import ArtifactCache
from pytest_inferbench.spec.families import PRESETS, MLPSpec, ResNetSpec, TransformerSpec
from pytest_inferbench.runtimes.base import LoadContext

SMALL = [MLPSpec(layers=2, hidden=32, features=16, classes=5),
         ResNetSpec(depth=10, width=8, resolution=32, classes=4),
         ResNetSpec(depth=50, width=4, resolution=32, classes=4),
         TransformerSpec(layers=1, hidden=32, heads=4, seq_len=16, vocab=100)]


@pytest.mark.parametrize("spec", SMALL, ids=lambda s: s.label())
def test_export_agrees_with_torch_at_any_batch(spec, tmp_path):
    ctx = LoadContext(cache=ArtifactCache(tmp_path))
    module, signature = torch_module(spec, ctx)
    path, onnx_sig = onnx_model(spec, ctx)
    assert onnx_sig == signature
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        inputs = signature.generate(batch, seed=1)
        with torch.inference_mode():
            want = module(*(torch.from_numpy(a) for a in inputs.values())).numpy()
        got = session.run(None, inputs)[0]
        assert got.shape == want.shape and got.shape[0] == batch
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_weights_are_deterministic_per_seed():
    ctx = LoadContext(cache=None)
    a, _ = torch_module(MLPSpec(seed=1), ctx)
    b, _ = torch_module(MLPSpec(seed=1), ctx)
    c, _ = torch_module(MLPSpec(seed=2), ctx)
    assert torch.equal(a[0].weight, b[0].weight) and not torch.equal(a[0].weight, c[0].weight)


def test_presets_are_valid():
    from pytest_inferbench.spec.families import FAMILIES
    for name, preset in PRESETS.items():
        FAMILIES[preset["family"]].model_validate(preset)


def _convert(args):
    cache_dir, barrier = args
    barrier.wait()
    ctx = LoadContext(cache=ArtifactCache(cache_dir))
    path, _ = onnx_model(MLPSpec(hidden=512, layers=4), ctx)
    ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return path, ctx.model_info["cache_hit"]


def test_concurrent_conversions_share_one_intact_artifact(tmp_path):
    mp = multiprocessing.get_context("spawn")
    with mp.Manager() as manager:
        barrier = manager.Barrier(3)
        with mp.Pool(3) as pool:
            out = pool.map(_convert, [(str(tmp_path), barrier)] * 3)
    paths = {p for p, _ in out}
    assert len(paths) == 1
    assert sorted(hit for _, hit in out) == [False, True, True]   # one built, two waited
    folder = Path(paths.pop()).parent
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "meta.json", "model.onnx"]
    assert json.loads((folder / "meta.json").read_text())["conversion_s"] > 0


def test_user_onnx_and_torchscript_files(pytester):
    net = torch.nn.Sequential(torch.nn.Linear(6, 3)).eval()
    torch.jit.trace(net, torch.randn(2, 6)).save(str(pytester.path / "net.pt"))
    from pytest_inferbench.models.artifacts import export_onnx
    from pytest_inferbench.core.signature import InputSignature, TensorSpec
    export_onnx(net, InputSignature(inputs=(TensorSpec(name="feat", shape=(6,)),)),
                pytester.path / "net.onnx")
    pytester.makefile(".yaml", bench_files=f"""
        name: files
        defaults: {{{FAST}}}
        benchmarks:
          - model: net.onnx
            runtime: [onnxruntime, torch]
            batch_size: [1, 5]
          - model: {{path: net.pt, inputs: {{x: [6]}}}}
            runtime: [torch, onnxruntime]
        """)
    result = pytester.runpytest("--infer-json", "run.json", "-rs")
    result.assert_outcomes(passed=4, skipped=2)
    result.stdout.fnmatch_lines(["*an ONNX file cannot run on a torch runtime*"])
    doc = json.loads((pytester.path / "run.json").read_text())
    by_id = {r["id"]: r for r in doc["results"]}
    onnx_cell = by_id["bench_files.yaml::net[onnxruntime-cpu-fp32-bs5-offline]"]
    assert onnx_cell["model"]["inputs"] == {"feat": {"shape": [5, 6], "dtype": "float32"}}
    ts_cell = by_id["bench_files.yaml::net[onnxruntime-cpu-fp32-bs1-offline#2]"]
    assert ts_cell["status"] == "passed" and ts_cell["model"]["cache_hit"] is False
