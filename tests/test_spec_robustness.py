"""Any bytes in, a clear error out: the spec and job loaders return a result or a SpecError
that names the file (and the line where there is one), never another exception."""

import copy
import math
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_inferbench.core.errors import SpecError
from pytest_inferbench.spec.families import FAMILIES
from pytest_inferbench import spec as schema
from pytest_inferbench.spec import load_job, load_spec
from pytest_inferbench.spec.yaml_lines import MAX_BYTES, MAX_DEPTH, MAX_VALUES

GOOD = "name: x\nbenchmarks:\n  - model: mlp-tiny\n    batch_size: [1, 2]\n"


def spec_error(path, loader=load_spec) -> SpecError:
    with pytest.raises(SpecError) as info:
        loader(path)
    assert info.value.render().startswith(str(Path(path).resolve()))
    return info.value


# ----------------------------------------------------------------------------- encoding, size


@pytest.mark.parametrize("loader", [load_spec, load_job])
def test_invalid_utf8_names_byte_line_and_column(tmp_path, loader):
    path = tmp_path / "bench_ff.yaml"
    path.write_bytes(b"name: x\nbenchmarks:\n  - model: ml\xffp-tiny\n")
    err = spec_error(path, loader)
    assert err.line == 3
    assert "not valid UTF-8: byte 0xff at line 3, column 14" in err.render()


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bench_bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert len(load_spec(path)) == 2


def test_utf16_is_named(tmp_path):
    path = tmp_path / "bench_u16.yaml"
    path.write_bytes(GOOD.encode("utf-16"))
    assert "UTF-16; save it as UTF-8" in spec_error(path).message


def test_binary_file_is_named(tmp_path):
    path = tmp_path / "bench_png.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    err = spec_error(path)
    assert err.line == 3 and "binary file: NUL byte at line 3, column 1" in err.message


def test_control_character_has_a_line(tmp_path):
    path = tmp_path / "bench_bell.yaml"
    path.write_text("name: x\nbenchmarks:\n  - model: mlp\x07tiny\n")
    err = spec_error(path)
    assert err.line == 3
    assert "control character U+0007 at line 3, column 15 is not allowed" in err.message


def test_lone_surrogate_escape_is_refused(write):
    spec = write("bench_s.yaml", 'name: x\nbenchmarks:\n  - {model: mlp-tiny, name: "a\\ud83d"}\n')
    err = spec_error(spec)
    assert err.line == 3 and "\\ud83d is half of a UTF-16 surrogate pair" in err.message


def test_huge_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "bench_big.yaml"
    path.write_bytes(b"# padding\n" * (MAX_BYTES // 10 + 10))
    start = time.perf_counter()
    err = spec_error(path, load_job)
    assert time.perf_counter() - start < 5
    assert "file is 4.0 MiB; a spec is expected to be small (limit 4 MiB)" in err.message


def test_unreadable_path_is_a_spec_error(tmp_path):
    (tmp_path / "bench_dir.yaml").mkdir()
    assert "cannot read file" in spec_error(tmp_path / "bench_dir.yaml").message


# ----------------------------------------------------------------------------- nesting, aliases


def test_deep_flow_nesting(tmp_path):
    path = tmp_path / "bench_deep.yaml"
    path.write_text("name: x\nbenchmarks: " + "[" * 5000 + "]" * 5000 + "\n")
    err = spec_error(path)
    assert err.line == 2 and f"nesting deeper than {MAX_DEPTH} levels" in err.message


def test_deep_block_nesting_points_at_the_line(tmp_path):
    path = tmp_path / "bench_deep.yaml"
    path.write_text("".join(f"{' ' * i}k{i}:\n" for i in range(200)))
    err = spec_error(path, load_job)
    assert err.line == MAX_DEPTH and "nesting deeper" in err.message


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a {<<: *a}\n"])
def test_alias_inside_its_own_anchor(tmp_path, text):
    path = tmp_path / "bench_loop.yaml"
    path.write_text(text)
    assert "nesting deeper" in spec_error(path).message


def test_billion_laughs_is_refused_quickly(tmp_path):
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = tmp_path / "bench_lol.yaml"
    path.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    err = spec_error(path, load_job)
    assert time.perf_counter() - start < 5
    assert f"expands to more than {MAX_VALUES} values (YAML aliases?)" in err.message


def test_small_aliases_and_merge_keys_work(write):
    spec = write("bench_alias.yaml", """
        name: alias
        defaults: &base {min_duration: 1s, max_duration: 2s}
        benchmarks:
          - &entry
            <<: *base
            model: mlp-tiny
            batch_size: &sizes [1, 2]
          - <<: [*entry, {runtime: torch}]
            batch_size: 4
            max_duration: 3s
          - {model: mlp-tiny, runtime: torch, batch_size: *sizes}
        """)
    cells = load_spec(spec)
    assert [(c.runtime, c.batch_size, c.settings.max_duration) for c in cells] == [
        ("onnxruntime", 1, 2.0), ("onnxruntime", 2, 2.0), ("torch", 4, 3.0),
        ("torch", 1, 2.0), ("torch", 2, 2.0)]
    assert cells[2].settings.min_duration == 1.0   # merged through *entry from *base


def test_error_in_merged_value_points_at_its_definition(write):
    spec = write("bench_alias.yaml", """
        name: alias
        defaults: &base {min_duration: soon}
        benchmarks:
          - <<: *base
            model: mlp-tiny
        """)
    assert spec_error(spec).line == 2


def test_merge_of_a_scalar_is_an_error(write):
    spec = write("bench_merge.yaml", "name: x\nbenchmarks:\n  - <<: 5\n    model: mlp-tiny\n")
    err = spec_error(spec)
    assert err.line == 3 and "merge key '<<' takes a mapping" in err.message


# ----------------------------------------------------------------------------- keys and tags


def test_duplicate_key_names_both_lines(write):
    spec = write("bench_dup.yaml", """
        name: x
        benchmarks:
          - model: mlp-tiny
            runtime: torch
            runtime: onnxruntime
        """)
    err = spec_error(spec)
    assert err.line == 5 and "duplicate key 'runtime' (first at line 4)" in err.message


def test_on_and_off_are_workload_fields_not_booleans(write):
    spec = write("bench_onoff.yaml", """
        name: x
        benchmarks:
          - model: mlp-tiny
            workload: {scenario: server, arrival: onoff, rate: 50, on: 2s, off: 500ms}
        """)
    (cell,) = load_spec(spec)
    assert (cell.workload.on, cell.workload.off) == (2.0, 0.5)


@pytest.mark.parametrize("key", ["yes", "1", "~", "3.5", "true"])
def test_keys_that_yaml_reads_as_other_types_keep_their_text(write, key):
    spec = write("bench_key.yaml", f"name: x\nbenchmarks:\n  - model: mlp-tiny\n    {key}: 1\n")
    err = spec_error(spec)
    assert err.line == 4 and f"unknown key '{key}'" in err.message


def test_non_scalar_key(write):
    spec = write("bench_key.yaml", "name: x\n? [a, b]\n: 1\n")
    assert "mapping keys must be plain scalars" in spec_error(spec).message


@pytest.mark.parametrize("value", ["!!binary aGVsbG8=", "!!python/object:os.system x",
                                   "!!int abc", "!!set {a, b}", "!custom x"])
def test_tags_are_refused_with_a_line(write, value):
    spec = write("bench_tag.yaml", f"name: x\nbenchmarks:\n  - model: mlp-tiny\n"
                                   f"    batch_size: {value}\n")
    err = spec_error(spec)
    assert err.line == 4 and "are not supported here" in err.message


def test_dates_and_yaml11_oddities_stay_text(write):
    spec = write("bench_date.yaml", "name: 2024-13-45\nbenchmarks:\n  - model: mlp-tiny\n"
                                    "    marks: [0x_]\n")
    err = spec_error(spec)   # '0x_' is text, so it is a bad mark name, not a crash
    assert "got '0x_'" in err.message and "mark" in err.message
    spec.write_text("name: 2024-01-01\nbenchmarks:\n  - model: mlp-tiny\n")
    assert load_spec(spec)[0].spec_name == "2024-01-01"


PATH_FIELDS = {
    "model": "benchmarks:\n  - model: {{path: {}, inputs: {{x: [4]}}}}\n",
    "trace": "benchmarks:\n  - model: mlp-tiny\n"
             "    workload: {{scenario: server, arrival: trace, trace: {}}}\n",
    "input data": "benchmarks:\n  - model: mlp-tiny\n"
                  "    serving: {{system: endpoint, url: 'h:1', model: m, data: {}}}\n",
}
BAD_PATHS = {  # value written -> what the message says
    "[[a.npz]]": "got ['a.npz']", "{a: 1}": "got {'a': 1}",
    '"a\\0b.npz"': "embedded null byte", "'" + "x" * 300 + ".npz'": "File name too long",
    "'" + "a/" * 3000 + "x.npz'": "File name too long", "sub.npz": "is a directory",
}


@pytest.mark.parametrize("field", sorted(PATH_FIELDS))
@pytest.mark.parametrize("value", sorted(BAD_PATHS))
def test_bad_file_paths(write, field, value):
    write("sub.npz/keep", "")
    spec = write("bench_p.yaml", "name: p\n" + PATH_FIELDS[field].format(value))
    err = spec_error(spec)
    assert err.line >= 3 and BAD_PATHS[value] in err.message, err.message
    if "got" not in BAD_PATHS[value]:
        assert field in err.message


def test_unhashable_names_are_spec_errors(write):
    for text, needle in [
            ("model: {family: {a: 1}}", "expected a model family name"),
            ("model: {family: [[mlp]]}", "got ['mlp']"),
            ("model: mlp-tiny\n    runtime: {name: [[torch]]}", "expected a runtime name"),
            ("model: mlp-tiny\n    exclude: [{runtime: {name: {a: 1}}}]", "runtime name"),
            ("model: mlp-tiny\n    name: {a: 1}", "expected a name (text), not a mapping"),
            ("model: mlp-tiny\n    marks: [_private]", "not starting with '_'")]:
        spec = write("bench_u.yaml", f"name: u\nbenchmarks:\n  - {text}\n")
        assert needle in spec_error(spec).message


def test_huge_matrix_is_refused_before_expanding(write):
    sizes = list(range(1, 31))
    spec = write("bench_m.yaml", f"""
        name: m
        defaults: {{batch_size: &n {sizes}}}
        benchmarks:
          - model: {{family: mlp, hidden: *n, features: *n}}
            batch_size: *n
        """)
    start = time.perf_counter()
    err = spec_error(spec)
    assert time.perf_counter() - start < 5
    assert err.line == 4 and "this sweep makes 27000 cells; a spec may have at most" in err.message


# ----------------------------------------------------------------------------- through pytest


def test_job_file_with_a_bad_byte_is_a_usage_error(pytester):
    (pytester.path / "job.yaml").write_bytes(b"name: j\ndefaults:\n  seed: \xff\n")
    result = pytester.runpytest("--infer-config", "job.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "job.yaml:3: not valid UTF-8: byte 0xff at line 3, column 9" in err, err
    out = err + result.stdout.str()
    assert "INTERNALERROR" not in out and "Traceback" not in out


def test_spec_file_with_a_bad_byte_is_a_collection_error(pytester):
    (pytester.path / "bench_ff.yaml").write_bytes(b"name: x\nbenchmarks:\n  - model: \xff\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert "bench_ff.yaml:3: not valid UTF-8: byte 0xff at line 3, column 12" in out, out
    assert "INTERNALERROR" not in out and "Traceback" not in out


# ----------------------------------------------------------------------------- properties


def outcome(path: Path):
    """Run both loaders; any exception other than SpecError fails the test."""
    try:
        job = load_job(path)
    except SpecError:
        job = None
    try:
        load_spec(path, job=job)
    except SpecError as exc:
        assert exc.file == str(path.resolve())
        assert exc.render() and exc.message


def check_bytes(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "bench_x.yaml")
        path.write_bytes(data)
        Path(tmp, "m.pt").write_text("x")
        Path(tmp, "net.onnx").write_text("x")
        Path(tmp, "t.csv").write_text("0.0\n0.1\n")
        Path(tmp, "d.npz").write_text("x")
        outcome(path)


SEEDS = [GOOD.encode(), b"""name: s
defaults: &d {warmup: 1s, min_duration: 1s, max_duration: 2s, percentiles: [50, 99]}
benchmarks:
  - <<: *d
    model: {family: mlp, hidden: [8, 16], layers: 1}
    runtime: [torch, {name: onnxruntime, graph_optimization: all}]
    workload: [offline, {scenario: server, arrival: onoff, rate: 5, on: 1s, off: 1s}]
    serving: {system: inprocess, instances: 2}
    threads: {intra: 2}
    exclude: [{runtime: torch, workload: offline}]
    include: [{runtime: torch, min_queries: 5}]
    marks: [quick]
"""]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        chunk = draw(st.binary(min_size=1, max_size=3) | st.sampled_from(
            [b"\xff", b"\x00", b"\n", b" ", b"[", b"{", b"*d", b"&a ", b"<<: ", b": ", b"- ",
             b"!!", b"'", b'"', b"\t", b"#", b"\xc3", b"on", b"1e400", b".nan"]))
        if draw(st.booleans()):
            data[at:at + len(chunk)] = chunk
        else:
            data[at:at] = chunk
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | mutated())
def test_arbitrary_bytes_give_a_result_or_a_spec_error(data):
    check_bytes(data)


SCHEMA_KEYS = [
    "name", "defaults", "benchmarks", "model", "runtime", "device", "precision", "batch_size",
    "threads", "workload", "serving", "include", "exclude", "marks", "warmup", "min_duration",
    "max_duration", "min_queries", "max_queries", "percentiles", "target_percentile", "ci_width",
    "confidence", "seed", "scenario", "arrival", "rate", "step", "max_rate", "burstiness", "on",
    "off", "trace", "concurrency", "slo", "timeout", "send_lag_bound", "family", "hidden",
    "layers", "features", "classes", "depth", "width", "resolution", "heads", "seq_len", "vocab",
    "channels", "path", "format", "factory", "inputs", "shape", "dtype", "high", "system",
    "instances", "protocol", "max_batch_size", "dynamic_batching", "max_queue_delay", "url",
    "intra", "inter", "include_copies", "graph_optimization", "provider", "mode", "p99", "x",
    "data"]
WORDS = [
    "mlp-tiny", "resnet-tiny", "bert-tiny", "resnet18", "mlp", "resnet", "transformer", "torch",
    "onnxruntime", "torchscript", "torch_compile", "cpu", "cuda", "cuda:1", "fp32", "fp16",
    "bf16", "int8", "offline", "single_stream", "server", "concurrency", "ramp", "capacity",
    "poisson", "onoff", "gamma", "trace", "constant", "inprocess", "triton", "http", "grpc",
    "endpoint", "1s", "50ms", "-1s", "1e999s", "nan", "inf", "m.pt", "net.onnx", "t.csv",
    "pkg.mod:make", "all", "float32", "int64", "quick", "", "p99", "p100", "1:2", "~", "_x",
    "a\0b.onnx", "x" * 300 + ".onnx", "../m.pt", "/", "."]
# Existing files (check_bytes writes them), missing ones, and names the OS refuses.
PATHS = ["m.pt", "net.onnx", "t.csv", "d.npz", "nope.onnx", "", ".", "/"] + [
    bad + suffix for bad in ("a\0b", "x" * 300, "a/" * 3000)
    for suffix in ("", ".onnx", ".pt", ".csv", ".npz", ".json")]

scalars = (st.none() | st.booleans() | st.integers(-3, 300) | st.integers()
           | st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 0.5, 1e308])
           | st.text(max_size=6) | st.sampled_from(WORDS))
keys = st.sampled_from(SCHEMA_KEYS) | st.text(max_size=5) | st.integers(-2, 2) | st.none() \
    | st.booleans()
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=40)
# The same, shaped like a spec often enough to get past the top-level checks.
spec_like = st.fixed_dictionaries(
    {"benchmarks": st.lists(st.dictionaries(keys, documents, max_size=6).map(
        lambda entry: {"model": "mlp-tiny", **entry}) | documents, min_size=1, max_size=2)},
    optional={"name": scalars, "defaults": st.dictionaries(keys, documents, max_size=4)})


@settings(max_examples=300, deadline=None)
@given(documents | spec_like)
def test_arbitrary_documents_give_a_result_or_a_spec_error(doc):
    check_bytes(yaml.safe_dump(doc, sort_keys=False).encode())


# A valid spec that touches every axis; one to three of its values are then replaced (or keys
# added) with arbitrary documents, so each field meets every kind of value.
BASE = {
    "name": "s",
    "defaults": {"warmup": "1s", "min_duration": "1s", "max_duration": "2s", "seed": 0,
                 "device": "cpu"},
    "benchmarks": [
        {"model": {"family": "mlp", "hidden": 8, "layers": 1},
         "runtime": {"name": "onnxruntime", "graph_optimization": "all"},
         "device": "cpu", "precision": "fp32", "batch_size": [1, 2], "threads": {"intra": 1},
         "workload": {"scenario": "server", "arrival": "onoff", "rate": 5, "on": "1s",
                      "off": "1s", "slo": {"p99": "50ms"}},
         "serving": {"system": "inprocess", "instances": 1}, "marks": ["quick"],
         "percentiles": [50, 99],
         "exclude": [{"batch_size": 2, "runtime": "onnxruntime"}],
         "include": [{"batch_size": 4, "min_queries": 5, "workload": {"scenario": "offline"}}]},
        {"model": {"path": "m.pt", "inputs": {"x": [4]}, "dtype": "float32"}, "name": "ts",
         "runtime": "torch", "serving": {"system": "triton", "max_batch_size": 8},
         "workload": {"scenario": "server", "arrival": "trace", "trace": "t.csv"}},
    ],
}


def _walk(node, prefix=()):
    yield prefix, node
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        yield from _walk(value, prefix + (key,))


PLACES = [p for p, _ in _walk(BASE)][1:]
MAPPINGS = [p for p, v in _walk(BASE) if isinstance(v, dict)]


def mostly(good, other):
    """good 7 times in 8 (one_of would pick each branch equally often)."""
    return st.sampled_from([True] * 7 + [False]).flatmap(lambda ok: good if ok else other)


# One kind in four each (a union of unions would be mostly scalars).
any_value = st.sampled_from([
    st.sampled_from(WORDS + PATHS), scalars,
    st.lists(st.sampled_from(WORDS + PATHS) | documents, min_size=1, max_size=3),
    st.dictionaries(keys, documents, min_size=1, max_size=3)]).flatmap(lambda kind: kind)


def _has(container, key) -> bool:
    if isinstance(container, dict):
        return isinstance(key, str)
    return isinstance(container, list) and isinstance(key, int) and key < len(container)


def _apply(doc, mutation):
    """Set the value at a place, or add a key to a mapping; skip places an earlier change
    removed."""
    kind, path, key, value = mutation
    if kind == "set":
        path, key = path[:-1], path[-1]
    parent = doc
    for part in path:
        if not _has(parent, part) or (isinstance(parent, dict) and part not in parent):
            return
        parent = parent[part]
    if _has(parent, key):
        parent[key] = value


def fields_for(place) -> list:
    """The keys the schema allows in the mapping at place (so added keys reach validation)."""
    last = place[-1] if place else None
    parent = place[-2] if len(place) > 1 else None
    models = {"serving": [schema.Serving], "workload": [schema.Workload],
              "runtime": [schema.RuntimeSpec], "threads": [schema.Threads],
              "model": [*FAMILIES.values(), schema.FileModel, schema.FactoryModel]}
    if not place:
        return list(schema.SPEC_KEYS)
    if last == "defaults":
        return list(schema.SETTINGS_FIELDS + schema.AXES[1:])
    if parent == "benchmarks":
        return list(schema.ENTRY_KEYS)
    if parent in ("include", "exclude"):
        return list(schema.AXES + schema.SETTINGS_FIELDS)
    if last in models:
        return sorted({f for m in models[last] for f in m.model_fields})
    return SCHEMA_KEYS


mutations = st.lists(mostly(
    st.tuples(st.just("set"), st.sampled_from(PLACES), st.none(), any_value),
    st.sampled_from(MAPPINGS).flatmap(lambda place: st.tuples(
        st.just("add"), st.just(place),
        st.sampled_from(fields_for(place)) | st.sampled_from(SCHEMA_KEYS), any_value))),
    min_size=1, max_size=3)


def test_base_spec_is_valid(tmp_path):
    for name, text in (("m.pt", "x"), ("t.csv", "0.0\n0.1\n")):
        (tmp_path / name).write_text(text)
    path = tmp_path / "bench_x.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert len(load_spec(path)) == 3


@settings(max_examples=500, deadline=None)
@given(mutations)
def test_any_value_in_any_field_gives_a_result_or_a_spec_error(changes):
    doc = copy.deepcopy(BASE)
    for change in changes:
        _apply(doc, change)
    check_bytes(yaml.safe_dump(doc, sort_keys=False).encode())
