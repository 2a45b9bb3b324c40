"""GPU paths. They run on a machine with a CUDA device (scripts/gpu_check.sh) and skip here."""

import json

import pytest
import torch

from conftest import FAST

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device visible to torch: GPU paths run with scripts/gpu_check.sh on a GPU "
           "machine")


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
    copies = [r for r in doc["results"] if "copies" in r["id"]]
    assert copies and copies[0]["runtime"]["include_copies"] is True


def test_device_fixture_gives_visible_cuda_device(inferbench_device):
    x = torch.ones(4, device=inferbench_device)
    assert x.device.type == "cuda" and float(x.sum()) == 4.0
