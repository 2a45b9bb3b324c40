"""Models nobody here wrote, as users bring them: Hugging Face modules built from configs
(nothing downloaded) behind plain factories, ONNX files exported by another tool with int64
inputs and named symbolic axes, torchvision and timm modules; and a cache that never serves a
stale model. Each through the plugin end to end (pytester), on every runtime it names."""

import json
import textwrap

import numpy as np
import pytest

import torchvision_cpu  # noqa: F401 - before transformers/timm import torchvision

from conftest import FAST

transformers = pytest.importorskip(
    "transformers", reason="transformers is a test extra: pip install -e '.[test]'")
# pytester's in-process runs drop the modules imported during a run: import the model classes
# here, once, so that transformers' lazy modules are not imported twice
from transformers import (BertModel, DistilBertModel, GPT2LMHeadModel,  # noqa: E402,F401
                          GPT2Model)

HF_MODELS = '''
import torchvision_cpu  # noqa: F401 - PyPI's torchvision beside the CPU torch
import torch
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel
from transformers import GPT2Config, GPT2Model, GPT2LMHeadModel


def bert():
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, vocab_size=500, max_position_embeddings=128)
    return BertModel(cfg), {"input_ids": {"shape": ["sequence"], "dtype": "int64"},
                            "attention_mask": {"shape": ["sequence"], "dtype": "int64"},
                            "token_type_ids": {"shape": ["sequence"], "dtype": "int64"}}


def distilbert():
    cfg = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=500,
                           max_position_embeddings=128)
    return DistilBertModel(cfg), {"input_ids": {"shape": [16], "dtype": "int64"},
                                  "attention_mask": {"shape": [16], "dtype": "int64"}}


def gpt2():
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=500, n_positions=64)
    return GPT2Model(cfg), {"input_ids": {"shape": [16], "dtype": "int64"},
                            "attention_mask": {"shape": [16], "dtype": "int64"}}


def gpt2_lm():
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=500, n_positions=64)
    return GPT2LMHeadModel(cfg), {"input_ids": {"shape": [16], "dtype": "int64"}}
'''


@pytest.fixture(autouse=True)
def _shim_beside_the_specs(pytester):
    """The factories import torchvision_cpu (transformers and timm import torchvision)."""
    import pathlib
    import shutil
    shutil.copy(pathlib.Path(__file__).with_name("torchvision_cpu.py"), pytester.path)


def _results(pytester, name="run.json"):
    doc = json.loads((pytester.path / name).read_text())
    return {r["id"].split("::")[1]: r for r in doc["results"]}


def test_hugging_face_modules_on_every_runtime_without_wrappers(pytester):
    pytester.makepyfile(hf_models=HF_MODELS)
    pytester.makefile(".yaml", bench_hf=f"""
        name: hf
        defaults: {{{FAST}}}
        benchmarks:
          - model: {{factory: "hf_models:bert", dims: {{sequence: [8, 16]}}}}
            runtime: onnxruntime
            batch_size: [1, 3]
          - model: {{factory: "hf_models:bert", dims: {{sequence: 16}}}}
            runtime: [torch, torchscript]
            batch_size: 3
          - model: [{{factory: "hf_models:gpt2"}}, {{factory: "hf_models:distilbert"}},
                    {{factory: "hf_models:gpt2_lm"}}]
            runtime: [torch, torchscript, onnxruntime]
          - model: [{{factory: "hf_models:gpt2"}}, {{factory: "hf_models:bert",
                     dims: {{sequence: 8}}}}]
            runtime: [torch, torchscript]
            precision: bf16
        """)
    result = pytester.runpytest("--infer-json", "run.json", "-p", "no:cacheprovider")
    by_id = _results(pytester)
    failed = {k: v["reason"] for k, v in by_id.items() if v["status"] != "passed"}
    assert not failed, failed
    assert len(by_id) == 4 + 2 + 9 + 4
    result.assert_outcomes(passed=19)
    bert = by_id["bert-sequence16[onnxruntime-cpu-fp32-bs3-offline]"]
    # the cache turned off, every output named and checked; BERT's inputs are its first
    # parameters in order (a positional call is the same call)
    assert bert["model"]["call"]["by"] == "position"
    assert bert["model"]["call"]["extras"] == {"use_cache": False}
    assert bert["model"]["outputs"] == ["last_hidden_state", "pooler_output"]
    assert bert["model"]["check"]["ok"] is True
    assert bert["model"]["inputs"]["input_ids"] == {"shape": [3, 16], "dtype": "int64",
                                                   "high": 500}
    assert bert["model"]["inputs"]["attention_mask"]["value"] == 1
    assert bert["model"]["inputs"]["token_type_ids"]["value"] == 0
    # one export serves both sequence lengths: the axis is dynamic and named
    short = by_id["bert-sequence8[onnxruntime-cpu-fp32-bs1-offline]"]
    assert short["model"]["artifact"] == bert["model"]["artifact"]
    import onnx
    graph = onnx.load(bert["model"]["artifact"]).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["batch",
                                                                                  "sequence"]
    assert [o.name for o in graph.output] == ["last_hidden_state", "pooler_output"]
    gpt2 = by_id["gpt2[torch-cpu-bf16-bs1-offline]"]
    # GPT-2's second parameter is past_key_values: the mask must go by name
    assert gpt2["model"]["call"] == {"by": "keyword", "extras": {"use_cache": False},
                                     "outputs": ["last_hidden_state"]}
    assert gpt2["model"]["check"]["ok"] is True and gpt2["model"]["check"]["max_rel_err"] > 0
    lm = by_id["gpt2_lm[torchscript-cpu-fp32-bs1-offline]"]
    assert lm["model"]["outputs"] == ["logits"]


def test_torch_compile_records_its_compilation_in_first_call(pytester):
    pytester.makepyfile(small="""
        import torch
        def net():
            return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU()), {"x": [8]}
        """)
    pytester.makefile(".yaml", bench_c=f"""
        name: c
        defaults: {{{FAST}}}
        benchmarks:
          - model: {{factory: "small:net"}}
            runtime: torch_compile
            batch_size: 20
        """)
    # in its own process: inductor's modules cannot be imported twice into one
    pytester.runpytest_subprocess("--infer-json", "run.json", "-p", "no:cacheprovider")
    (cell,) = _results(pytester).values()
    assert cell["status"] == "passed", cell["reason"]
    # compiled twice (the check's batch of 16 and the cell's 20): both in first_call_s,
    # which is far beyond a steady-state query
    assert cell["runtime"]["first_call_s"] > 20 * cell["latency_ms"]["percentiles"]["p50"][
        "value"] / 1e3


def _export_bert_onnx(path, vocab=500):
    """An ONNX file made the way users make one, with torch.onnx.export itself (not this
    plugin): int64 inputs, named symbolic axes batch and sequence."""
    import torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, vocab_size=vocab,
                                 max_position_embeddings=128)).eval()

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          return_dict=False)[0]
    ids = torch.zeros(2, 8, dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(Plain(), (ids, ids), str(path), input_names=["input_ids",
                                                                       "attention_mask"],
                          output_names=["hidden"], dynamic_axes={"input_ids": axes,
                                                                 "attention_mask": axes},
                          opset_version=17, dynamo=False)


def test_onnx_file_int64_inputs_and_named_axes_swept(pytester):
    _export_bert_onnx(pytester.path / "bert.onnx")
    pytester.makefile(".yaml", bench_o=f"""
        name: o
        defaults: {{{FAST}}}
        benchmarks:
          - model: {{path: bert.onnx, dims: {{sequence: [8, 32]}}, inputs: {{input_ids: {{high: 500}}}}}}
            runtime: onnxruntime
            precision: [fp32, int8]
            batch_size: [1, 4]
        """)
    collected = pytester.runpytest("--collect-only", "-q")
    collected.stdout.fnmatch_lines(["*bert-sequence8[[]onnxruntime-cpu-fp32-bs1-offline[]]",
                                    "*bert-sequence32[[]onnxruntime-cpu-int8-bs4-offline[]]",
                                    "8 tests collected*"])
    pytester.runpytest("--infer-json", "run.json", "-p", "no:cacheprovider")
    by_id = _results(pytester)
    failed = {k: v["reason"] for k, v in by_id.items() if v["status"] != "passed"}
    assert not failed, failed
    cell = by_id["bert-sequence32[onnxruntime-cpu-fp32-bs4-offline]"]
    # dtypes from the file, the mask bound by the shared axis and filled with ones
    assert cell["model"]["inputs"] == {
        "input_ids": {"shape": [4, 32], "dtype": "int64", "high": 500},
        "attention_mask": {"shape": [4, 32], "dtype": "int64", "value": 1}}


def test_onnx_file_problems_are_spec_errors_naming_the_fix(pytester):
    _export_bert_onnx(pytester.path / "bert.onnx")
    cases = {
        "unbound": ("{path: bert.onnx}", ["*bench_x.yaml:4*input 'input_ids' of bert.onnx has a "
                                          "symbolic axis 1 ('sequence')*dims: {sequence: N}*"]),
        "typo": ("{path: bert.onnx, dims: {sequnce: 8}}",
                 ["*dims 'sequnce' bind no axis of bert.onnx (its named axes: batch, sequence)*"]),
        "dtype": ("{path: bert.onnx, dims: {sequence: 8}, inputs: {input_ids: {dtype: float32}}}",
                  ["*input 'input_ids' is int64 in bert.onnx, the spec says float32*"]),
        "name": ("{path: bert.onnx, dims: {sequence: 8}, inputs: {input: {high: 5}}}",
                 ["*bert.onnx has no input named 'input' (its inputs: input_ids, "
                  "attention_mask)*"]),
    }
    for model, expected in cases.values():
        pytester.makefile(".yaml", bench_x=f"""
            name: x
            benchmarks:
              - runtime: onnxruntime
                model: {model}
            """)
        result = pytester.runpytest("--collect-only", "-q")
        assert result.ret != 0
        result.stdout.fnmatch_lines(expected)
        assert "Traceback" not in result.stdout.str()


def test_inputs_without_a_batch_axis_and_fixed_values(pytester):
    """A recurrent state of fixed shape and a scalar sample rate beside a batched input (the
    shape of silero-vad's inputs): the state is fed as declared at every batch size."""
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])
    state = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, 64])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 64])
    nodes = [helper.make_node("ReduceSum", ["state"], ["s"], keepdims=0),
             helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["input", "srf"], ["y"]),
             helper.make_node("Add", ["y", "s"], ["out"])]
    graph = helper.make_graph(nodes, "g", [x, state, sr], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(pytester.path / "vad.onnx"))
    pytester.makefile(".yaml", bench_v=f"""
        name: v
        defaults: {{{FAST}}}
        benchmarks:
          - model: {{path: vad.onnx, inputs: {{sr: {{value: 16000}}, state: {{low: -1}}}}}}
            runtime: onnxruntime
            batch_size: [1, 8]
        """)
    pytester.runpytest("--infer-json", "run.json", "-p", "no:cacheprovider")
    by_id = _results(pytester)
    cell = by_id["vad[onnxruntime-cpu-fp32-bs8-offline]"]
    assert cell["status"] == "passed", cell["reason"]
    assert cell["model"]["inputs"]["state"] == {"shape": [2, 1, 64], "dtype": "float32",
                                                "batch_axis": None, "low": -1.0}
    assert cell["model"]["inputs"]["sr"] == {"shape": [], "dtype": "int64", "batch_axis": None,
                                             "value": 16000.0}
    assert cell["model"]["inputs"]["input"]["shape"] == [8, 64]


def test_signature_values_ranges_and_batch_axes():
    from pytest_inferbench.core.signature import InputSignature, TensorSpec
    sig = InputSignature(inputs=(
        TensorSpec(name="mask", shape=(5,), dtype="int64", value=1),
        TensorSpec(name="ids", shape=(5,), dtype="int64", low=10, high=12),
        TensorSpec(name="u", shape=(3,), dtype="float32", low=2.0),
        TensorSpec(name="h", shape=(2, 7), dtype="float32", batch_axis=1)))
    out = sig.generate(4, seed=0)
    assert (out["mask"] == 1).all() and out["mask"].shape == (4, 5)
    assert set(np.unique(out["ids"])) <= {10, 11}
    assert (out["u"] >= 2).all() and (out["u"] < 3).all()
    assert out["h"].shape == (2, 4, 7)
    batch = sig.batch_of({"mask": np.ones(5), "ids": np.arange(5), "u": np.zeros((6, 3)),
                          "h": np.zeros((2, 7))}, 4)
    assert batch["ids"].shape == (4, 5) and batch["u"].shape == (4, 3)
    assert batch["h"].shape == (2, 4, 7)


STALE_LAYERS = "WIDTH = {width}\n"
STALE_FACTORY = '''
import torch
import layer_sizes


def make():
    w = layer_sizes.WIDTH
    return torch.nn.Sequential(torch.nn.Linear(16, w), torch.nn.ReLU(),
                               torch.nn.Linear(w, 4)), {"x": [16]}
'''


def test_a_changed_module_behind_a_factory_is_never_measured_from_the_cache(pytester):
    """The factory's file does not change; the module it imports does (the layer widths):
    every cached artifact (ONNX export, int8, TorchScript trace, numerical check) must be
    rebuilt and the runtime must run the new model."""
    pytester.makepyfile(stale_factory=STALE_FACTORY)
    pytester.makefile(".yaml", bench_s=f"""
        name: s
        defaults: {{{FAST}}}
        benchmarks:
          - model: {{factory: "stale_factory:make"}}
            runtime: [torch, torchscript, onnxruntime]
            include: [{{runtime: onnxruntime, precision: int8}}]
        """)
    runs = {}
    for width in (8, 512):
        (pytester.path / "layer_sizes.py").write_text(STALE_LAYERS.format(width=width))
        pytester.runpytest("--infer-json", f"run{width}.json", "-p", "no:cacheprovider")
        runs[width] = _results(pytester, f"run{width}.json")
    for cell_id, old in runs[8].items():
        new = runs[512][cell_id]
        assert old["status"] == new["status"] == "passed", (cell_id, new["reason"])
        assert new["model"]["parameters"] == 16 * 512 + 512 + 512 * 4 + 4
        assert new["model"]["digest"] != old["model"]["digest"]
        assert new["model"]["check"] == {"reference": True} or \
            new["model"]["check"]["cached"] is False
        for step in new["model"]["conversions"]:
            assert step["cache_hit"] is False, (cell_id, step)
        if new["model"].get("artifact") is not None:     # a runtime with an artifact file
            assert new["model"]["artifact"] != old["model"]["artifact"]
    # and an unchanged module is a cache hit
    pytester.runpytest("--infer-json", "again.json", "-p", "no:cacheprovider")
    again = _results(pytester, "again.json")["make[onnxruntime-cpu-int8-bs1-offline]"]
    assert all(step["cache_hit"] for step in again["model"]["conversions"])


def test_the_spec_directory_is_importable_for_factories(pytester):
    sub = pytester.path / "specs"
    sub.mkdir()
    (sub / "my_nets.py").write_text(textwrap.dedent("""
        import torch
        def net():
            return torch.nn.Linear(6, 2), {"x": [6]}
        """))
    (sub / "bench_n.yaml").write_text(textwrap.dedent(f"""
        name: n
        defaults: {{{FAST}}}
        benchmarks:
          - model: {{factory: "my_nets:net"}}
            runtime: [torch, onnxruntime]
        """))
    result = pytester.runpytest("specs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_failures_give_one_clean_message_and_keep_the_check(pytester):
    pytester.makepyfile(odd_models='''
        import torch

        def broken():
            class M(torch.nn.Module):
                def forward(self, x):
                    raise RuntimeError("weights corrupted on purpose")
            return M(), {"x": [4]}

        def unstable():
            # bf16 of a large sum of cancelling terms: far beyond the bf16 tolerance
            class M(torch.nn.Module):
                def forward(self, x):
                    return (x * 1e4 + 1.0) - x * 1e4
            return M(), {"x": [64]}
        ''')
    pytester.makefile(".yaml", bench_b=f"""
        name: b
        defaults: {{{FAST}}}
        benchmarks:
          - model: {{factory: "odd_models:broken"}}
            runtime: torch
          - model: {{factory: "odd_models:unstable"}}
            runtime: torch
            precision: bf16
          - model: {{factory: "odd_models:unstable", name: tolerant}}
            runtime: torch
            precision: bf16
            check: {{tolerance: 1000}}
        """)
    result = pytester.runpytest("--infer-json", "run.json", "-p", "no:cacheprovider")
    out = result.stdout.str()
    assert "During handling" not in out
    assert "CellStepError" not in out          # the message alone, no exception chain
    by_id = _results(pytester)
    broken = by_id["broken[torch-cpu-fp32-bs1-offline]"]
    assert broken["status"] == "failed"
    assert broken["reason"] == "loading the model: RuntimeError: weights corrupted on purpose"
    unstable = by_id["unstable[torch-cpu-bf16-bs1-offline]"]
    assert unstable["status"] == "failed" and "tolerance" in unstable["reason"]
    assert unstable["model"]["check"]["ok"] is False
    assert unstable["model"]["check"]["max_rel_err"] > 0.1
    tolerant = by_id["tolerant[torch-cpu-bf16-bs1-offline]"]
    assert tolerant["status"] == "passed", tolerant["reason"]
    assert tolerant["model"]["check"]["tolerance"] == 1000


def test_torchvision_and_timm_models(pytester):
    pytest.importorskip("timm", reason="timm is a test extra: pip install -e '.[test]'")
    pytester.makepyfile(vision='''
        import torchvision_cpu  # noqa: F401
        import timm
        import torchvision

        def mobilenet():
            return torchvision.models.mobilenet_v3_small(weights=None, num_classes=10), \\
                {"x": [3, 64, 64]}

        def efficientnet():
            return timm.create_model("efficientnet_b0", pretrained=False, num_classes=10), \\
                {"x": [3, 64, 64]}
        ''')
    pytester.makefile(".yaml", bench_tv=f"""
        name: tv
        defaults: {{{FAST}}}
        benchmarks:
          - model: [{{factory: "vision:mobilenet"}}, {{factory: "vision:efficientnet"}}]
            runtime: [torch, onnxruntime]
        """)
    pytester.runpytest("--infer-json", "run.json", "-p", "no:cacheprovider")
    by_id = _results(pytester)
    failed = {k: v["reason"] for k, v in by_id.items() if v["status"] != "passed"}
    assert not failed and len(by_id) == 4, failed
