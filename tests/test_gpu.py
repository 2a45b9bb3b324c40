"""GPU paths. They run on a machine with a CUDA device (scripts/gpu_check.sh) and skip here."""

import json

import numpy as np
import pytest
import torch

from conftest import FAST

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(   # gpu: this skip does not fail CI
    not torch.cuda.is_available(),
    reason="no CUDA device visible to torch: GPU paths run with scripts/gpu_check.sh on a GPU "
           "machine")]


def test_cuda_cells_synchronise_monitor_and_check(pytester):
    pytester.makefile(".yaml", bench_cuda=f"""
        name: cuda
        defaults: {{{FAST}}}
        benchmarks:
          - model: mlp-small
            device: cuda
            runtime: [torch, torchscript]
            precision: [fp32, fp16, bf16]
            batch_size: [1, 16]
          - model: mlp-small
            device: cuda
            runtime: {{name: torch, include_copies: true}}
            batch_size: 16
        """)
    result = pytester.runpytest("--infer-json", "run.json")
    result.assert_outcomes(passed=13)
    doc = json.loads((pytester.path / "run.json").read_text())
    assert doc["provenance"]["gpu"]["available"] and doc["provenance"]["gpu"]["gpus"]
    for r in doc["results"]:
        assert r["model"]["check"]["ok"], r["id"]
        gpu = r["gpu"]
        if gpu["available"]:
            assert gpu["samples"] >= 1 and gpu["name"] and gpu["power_w"]["max"] > 0
            assert gpu["energy_j"] is None or gpu["energy_j"] >= 0
        else:
            assert gpu["reason"]
        assert r["runtime"]["device_name"]
        device = r["device_time"]       # CUDA events on every tenth query, probes after
        assert device["available"] and device["sampled"] >= 1, r["id"]
        assert device["span_ms"]["mean"] > 0 and device["device_ms"]["mean"] > 0, device
        assert 0 < device["busy_share"] and isinstance(device["launch_bound"], bool), device
    copies = [r for r in doc["results"] if "copies" in r["id"]]
    assert copies and copies[0]["runtime"]["include_copies"] is True


def test_device_fixture_gives_visible_cuda_device(inferbench_device):
    x = torch.ones(4, device=inferbench_device)
    assert x.device.type == "cuda" and float(x.sum()) == 4.0


def test_cuda_graphs_cells_check_replayed_outputs_and_report_device_time(pytester):
    pytester.makefile(".yaml", bench_graphs=f"""
        name: graphs
        defaults: {{{FAST}}}
        benchmarks:
          - model: resnet-tiny
            device: cuda
            precision: [fp32, fp16]
            runtime: [{{name: torch, cuda_graphs: true}}, {{name: torchscript, cuda_graphs: true}},
                      {{name: torch, cuda_graphs: true, include_copies: true}}]
            batch_size: [8, 32]
        """)
    result = pytester.runpytest("--infer-json", "run.json", "-rs")
    result.assert_outcomes(passed=12)
    doc = json.loads((pytester.path / "run.json").read_text())
    for r in doc["results"]:
        check, runtime, device = r["model"]["check"], r["runtime"], r["device_time"]
        assert check["ok"], r["id"]
        assert "graphs" in r["id"], r["id"]
        assert runtime["cuda_graphs"] is True and runtime["capture_s"] > 0, runtime
        # the check ran through a graph of its own batch size (16) unless it was cached
        bs = r["batch_size"]
        assert runtime["graphs_captured"] == (1 if bs <= 16 or check.get("cached") else 2)
        assert device["available"] and device["sampled"] >= 1, device
        assert device["device_ms"]["mean"] > 0 and device["busy_share"] > 0, device
        assert device["span_ms"]["mean"] <= r["latency_ms"]["max"], device


def test_replayed_graph_outputs_equal_eager_outputs(tmp_path):
    from pytest_inferbench.models.cache import ArtifactCache
    from pytest_inferbench.spec.families import PRESETS, ResNetSpec
    from pytest_inferbench.runtimes.base import LoadContext
    from pytest_inferbench.runtimes.torch_eager import TorchRunner
    spec = ResNetSpec.model_validate(PRESETS["resnet-tiny"])
    eager, graphs = TorchRunner(), TorchRunner()
    ctx = LoadContext(cache=ArtifactCache(tmp_path))
    eager.load(spec, "cuda", "fp32", ctx)
    graphs.load(spec, "cuda", "fp32", LoadContext(cache=ArtifactCache(tmp_path),
                                                 options={"cuda_graphs": True}))
    signature = ctx.signature

    def close(got, want):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=0, atol=2e-3 * float(np.abs(w).max()))
    try:
        for seed in (1, 2):             # new values reach the static inputs of a cached graph
            for bs in (4, 8):
                x = signature.generate(bs, seed=seed)
                close(graphs.infer(x), eager.infer(x))
        assert graphs.info()["graphs_captured"] == 2
        x = signature.generate(8, seed=3)
        fn = graphs.prepare(x)          # reuses the batch-8 graph, with x copied in
        fn()
        assert graphs.info()["graphs_captured"] == 2 and graphs.device_timer is not None
        (entry,) = [e for key, e in graphs._graphs.items() if key[0][0][0] == 8]
        close([o.float().cpu().numpy() for o in entry.outputs], eager.infer(x))
    finally:
        eager.close()
        graphs.close()
