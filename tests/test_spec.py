"""Spec loading: matrix expansion, ids, defaults, paths, and every kind of bad input."""

import pytest

from pytest_inferbench.core.errors import SpecError
from pytest_inferbench.spec import load_job, load_spec


def ids(cells):
    return [c.id for c in cells]


def test_issue_example_expands_with_exclude(write):
    spec = write("bench_vision.yaml", """
        name: vision-cpu
        defaults: {warmup: 1s, min_duration: 5s, max_duration: 60s, min_queries: 100,
                   percentiles: [50, 90, 95, 99, 99.9], ci_width: 0.05, seed: 0}
        benchmarks:
          - model: resnet18
            runtime: [torch, onnxruntime]
            device: cpu
            precision: fp32
            batch_size: [1, 8, 32]
            workload: {scenario: offline}
            serving: inprocess
            exclude:
              - {runtime: torch, batch_size: 32}
        """)
    cells = load_spec(spec)
    assert ids(cells) == [
        "resnet18[torch-cpu-fp32-bs1-offline]", "resnet18[torch-cpu-fp32-bs8-offline]",
        "resnet18[onnxruntime-cpu-fp32-bs1-offline]", "resnet18[onnxruntime-cpu-fp32-bs8-offline]",
        "resnet18[onnxruntime-cpu-fp32-bs32-offline]"]
    cell = cells[0]
    assert cell.model.family == "resnet" and cell.model.depth == 18
    assert cell.settings.warmup == 1.0 and cell.settings.min_duration == 5.0
    assert cell.settings.percentiles == (50, 90, 95, 99, 99.9)
    assert cell.spec_name == "vision-cpu"
    assert cell.line == 5   # the "- model:" line of the entry


def test_include_extends_matching_and_adds_new(write):
    spec = write("bench_inc.yaml", """
        name: inc
        benchmarks:
          - model: mlp-tiny
            runtime: [torch, onnxruntime]
            batch_size: [1, 4]
            include:
              - {runtime: torch, min_duration: 2s}       # extends both torch cells
              - {runtime: onnxruntime, batch_size: 64}   # clashes with originals -> new cell
              - {precision: bf16, runtime: torch}        # precision was not written: extends
        """)
    cells = {c.id: c for c in load_spec(spec)}
    assert set(cells) == {
        "mlp-tiny[torch-cpu-bf16-bs1-offline]", "mlp-tiny[torch-cpu-bf16-bs4-offline]",
        "mlp-tiny[onnxruntime-cpu-fp32-bs1-offline]", "mlp-tiny[onnxruntime-cpu-fp32-bs4-offline]",
        "mlp-tiny[onnxruntime-cpu-fp32-bs64-offline]"}
    assert cells["mlp-tiny[torch-cpu-bf16-bs1-offline]"].settings.min_duration == 2.0
    assert cells["mlp-tiny[onnxruntime-cpu-fp32-bs1-offline]"].settings.min_duration == 5.0


def test_nested_lists_and_shorthands_are_sweeps(write):
    spec = write("bench_n.yaml", """
        name: n
        benchmarks:
          - model: {family: mlp, hidden: [32, 64], layers: 1}
            workload: [offline, {scenario: single_stream}]
        """)
    assert ids(load_spec(spec)) == [
        "mlp-l1-h32[onnxruntime-cpu-fp32-bs1-offline]",
        "mlp-l1-h32[onnxruntime-cpu-fp32-bs1-single_stream]",
        "mlp-l1-h64[onnxruntime-cpu-fp32-bs1-offline]",
        "mlp-l1-h64[onnxruntime-cpu-fp32-bs1-single_stream]"]


def test_exclude_partial_workload_mapping(write):
    spec = write("bench_x.yaml", """
        name: x
        benchmarks:
          - model: mlp-tiny
            workload: [offline, single_stream]
            batch_size: [1, 8]
            exclude: [{workload: {scenario: single_stream}, batch_size: 8}]
        """)
    assert len(load_spec(spec)) == 3


def test_settings_precedence_job_spec_entry(write):
    job = write("job.yaml", """
        name: job
        defaults: {min_duration: 3s, max_duration: 9s, seed: 7, device: cpu}
        """)
    spec = write("bench_p.yaml", """
        name: p
        defaults: {min_duration: 2s}
        benchmarks:
          - {model: mlp-tiny, max_duration: 4s}
        """)
    (cell,) = load_spec(spec, job=load_job(job))
    assert (cell.settings.min_duration, cell.settings.max_duration, cell.settings.seed) == (2, 4, 7)


def test_relative_model_paths_resolve_against_spec_dir(write, tmp_path):
    model = write("models/net.onnx", "not really onnx, only its path matters here")
    spec = write("sub/bench_f.yaml", """
        name: f
        benchmarks:
          - model: ../models/net.onnx
        """)
    (cell,) = load_spec(spec)
    assert cell.model.path == str(model.resolve()) and cell.model.format == "onnx"
    assert cell.model_label == "net"


def test_duplicate_ids_get_a_suffix(write):
    spec = write("bench_d.yaml", """
        name: d
        benchmarks:
          - model: mlp-tiny
          - model: mlp-tiny
            min_duration: 1s
        """)
    assert ids(load_spec(spec)) == ["mlp-tiny[onnxruntime-cpu-fp32-bs1-offline]",
                                    "mlp-tiny[onnxruntime-cpu-fp32-bs1-offline#2]"]


def test_factory_and_torchscript_forms(write):
    write("m.pt", "x")
    spec = write("bench_t.yaml", """
        name: t
        benchmarks:
          - model: {path: m.pt, inputs: {x: [3, 32, 32]}, dtype: float32}
            runtime: torch
          - model: "mypkg.models:make_net"
            runtime: torch
        """)
    a, b = load_spec(spec)
    assert a.model.format == "torchscript" and a.model.inputs["x"].shape == (3, 32, 32)
    assert b.model.factory == "mypkg.models:make_net" and b.model_label == "make_net"


BAD = [
    # (yaml text, expected line, substrings of the message)
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    runtime: [torch, onnxruntime\n", 5,
     ["invalid YAML"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    runtme: torch\n", 4,
     ["benchmarks[0].runtme", "unknown key 'runtme'", "did you mean 'runtime'"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    batch_size: [1, 0]\n", 4,
     ["benchmarks[0].batch_size[1]", "positive integer", "0"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    batch_size: eight\n", 4,
     ["positive integer", "'eight'"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    runtime: onnxrutime\n", 4,
     ["unknown runtime 'onnxrutime'", "did you mean 'onnxruntime'"]),
    ("name: x\nbenchmarks:\n  - model: {family: resnt, depth: 18}\n", 3,
     ["benchmarks[0].model.family", "unknown model family 'resnt'", "did you mean 'resnet'"]),
    ("name: x\nbenchmarks:\n  - model: missing/net.onnx\n", 3,
     ["model file not found", "net.onnx"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    runtime: torch\n    exclude:\n"
     "      - {runtime: torch}\n", 3, ["matrix is empty"]),
    ("name: x\ndefaults:\n  min_duration: soon\nbenchmarks:\n  - model: mlp-tiny\n", 3,
     ["defaults.min_duration", "duration"]),
    ("name: x\nbenchmarks:\n  - model: {family: resnet, depht: 18}\n", 3,
     ["unknown key 'depht'", "did you mean 'depth'"]),
    ("name: x\nbenchmarks:\n  - model: {family: resnet, width: wide}\n", 3,
     ["benchmarks[0].model.width", "integer"]),
    ("name: x\nbenchmarks:\n  - model: resnet81\n", 3,
     ["unknown model 'resnet81'", "did you mean"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    workload: {scenario: ofline}\n", 4,
     ["benchmarks[0].workload.scenario", "ofline", "did you mean 'offline'"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    batch_size: []\n", 4, ["empty list"]),
    ("name: x\nbenchmarks: []\n", 2, ["non-empty list of benchmarks"]),
    ("name: x\nbenchmark:\n  - model: mlp-tiny\n", 2, ["unknown key 'benchmark'",
                                                        "did you mean 'benchmarks'"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    min_duration: 10s\n    max_duration: 1s\n",
     3, ["max_duration", "shorter than min_duration"]),
    ("name: x\nbenchmarks:\n  - model: {path: m.pt}\n", 3, ["not found"]),
    ("", None, ["empty"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    serving: {system: endpoint, url: 'h:1'}\n", 4,
     ["needs `url` and `model`"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    serving: {system: http, protocol: grpc}\n", 4,
     ["`protocol` does not apply to serving system http"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    serving: {system: trition}\n", 4,
     ["did you mean 'triton'"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    runtime: {name: torch, provider: cuda}\n", 4,
     ["option 'provider' does not apply to runtime torch"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    runtime: {name: onnxruntime, graph_optimization: max}\n",
     4, ["graph_optimization", "'max'"]),
    ("name: x\nbenchmarks:\n  - model: mlp-tiny\n    threads: {intra: 0}\n", 4,
     ["benchmarks[0].threads.intra", "greater than or equal to 1"]),
]


@pytest.mark.parametrize("text,line,needles", BAD, ids=[n[0] for _, _, n in BAD])
def test_bad_input_names_file_line_field(tmp_path, text, line, needles):
    spec = tmp_path / "bench_bad.yaml"
    spec.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    message = info.value.render()
    assert message.startswith(str(spec.resolve()))
    assert info.value.line == line
    for needle in needles:
        assert needle in message, message


def test_torchscript_without_inputs_is_rejected(write):
    write("m.pt", "x")
    spec = write("bench_ts.yaml", "name: t\nbenchmarks:\n  - {model: m.pt, runtime: torch}\n")
    with pytest.raises(SpecError, match="does not carry its input signature"):
        load_spec(spec)
