"""Inputs for an existing endpoint from its KServe v2 metadata, the spec's shapes and data."""

import json

import numpy as np
import pytest

from pytest_inferbench.core.errors import SpecError
from pytest_inferbench.serving.inputs import (EndpointInputError, generate, load_data,
                                              signature_from_metadata)
from pytest_inferbench.spec import InputDecl, load_spec

BERT = [{"name": "ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "mask", "datatype": "INT64", "shape": [-1, 128]}]


def test_dynamic_dimensions_need_a_shape_and_take_the_range():
    with pytest.raises(EndpointInputError, match=r"'ids' has dynamic dimensions.*inputs: "
                                                 r"\{ids: \{shape: \[128\]"):
        signature_from_metadata(BERT, None, 4)
    sig = signature_from_metadata(BERT, {"ids": InputDecl(shape=(128,), high=30522)}, 4)
    x = generate(sig, BERT, 4, seed=0)
    assert x["ids"].shape == (4, 128) and x["ids"].dtype == np.int64
    assert x["ids"].max() >= 100 and x["ids"].max() < 30522      # the range given, not 100
    assert x["mask"].shape == (4, 128)
    with pytest.raises(EndpointInputError, match="does not fit the endpoint's shape"):
        signature_from_metadata(BERT, {"ids": InputDecl(shape=(128,)),
                                       "mask": InputDecl(shape=(64,))}, 4)
    with pytest.raises(EndpointInputError, match="does not list.*its inputs: ids, mask"):
        signature_from_metadata(BERT, {"token": InputDecl(shape=(8,))}, 4)


def test_inputs_without_a_batch_axis():
    meta = [{"name": "x", "datatype": "FP32", "shape": [3, 8]}]
    sig = signature_from_metadata(meta, None, 1)
    assert generate(sig, meta, 1, seed=0)["x"].shape == (3, 8)      # sent as the server says
    with pytest.raises(EndpointInputError, match="no dynamic batch axis.*batch_size: 1"):
        signature_from_metadata(meta, None, 4)
    with pytest.raises(EndpointInputError, match="datatype BYTES"):
        signature_from_metadata([{"name": "s", "datatype": "BYTES", "shape": [-1, 1]}], None, 1)


def test_data_files(tmp_path):
    meta = [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
    sig = signature_from_metadata(meta, None, 3)
    (tmp_path / "one.json").write_text(json.dumps({"x": [1.0, 2.0]}))
    x = load_data(tmp_path / "one.json", sig, meta, 3)["x"]
    assert x.shape == (3, 2) and x.dtype == np.float32 and np.all(x[:, 1] == 2.0)
    np.savez(tmp_path / "many.npz", x=np.arange(10, dtype=np.float64).reshape(5, 2))
    x = load_data(tmp_path / "many.npz", sig, meta, 3)["x"]
    assert x.tolist() == [[0, 1], [2, 3], [4, 5]] and x.dtype == np.float32
    np.savez(tmp_path / "wrong.npz", y=np.zeros(2))
    with pytest.raises(EndpointInputError, match="no array for input 'x' \\(has: y\\)"):
        load_data(tmp_path / "wrong.npz", sig, meta, 3)
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    with pytest.raises(EndpointInputError, match="cannot read input data"):
        load_data(tmp_path / "bad.json", sig, meta, 3)


def test_only_an_endpoint_does_without_a_model(write):
    f = write("bench_e.yaml", """
        name: e
        benchmarks:
          - serving: {system: endpoint, url: "127.0.0.1:8000", model: resnet}
            batch_size: [1, 8]
        """)
    assert [c.id for c in load_spec(f)] == ["resnet[bs1-offline-endpoint(http,resnet)]",
                                            "resnet[bs8-offline-endpoint(http,resnet)]"]
    f = write("bench_m.yaml", """
        name: m
        benchmarks:
          - serving: [http, {system: endpoint, url: "127.0.0.1:8000", model: resnet}]
        """)
    with pytest.raises(SpecError, match=r"bench_m.yaml:3: benchmarks\[0\]: each benchmark "
                                        r"needs a 'model' \(only `serving: \{system: endpoint\}`"):
        load_spec(f)
    f = write("bench_d.yaml", """
        name: d
        benchmarks:
          - serving: {system: endpoint, url: "127.0.0.1:8000", model: m, data: inputs.csv}
        """)
    with pytest.raises(SpecError, match=r"bench_d.yaml:3: .*serving.data: input data must be a "
                                        r"\.npz or \.json file"):
        load_spec(f)
