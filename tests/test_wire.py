"""Large inline weights stay in the file (relulint.wire): same numbers, same findings, same probe."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from relulint import loader
from relulint.config import Config
from relulint.engine import analyse
from relulint.graph import build_graph
from relulint.loader import load_model
from relulint.modelkit import ModelBuilder
from relulint.wire import FileBytes, encode_varint, iter_fields, message_depth, read_varint, strip_large_raw_data

WIDTH = 2100  # a 2100 x 2100 float32 weight: 17.6 MB, over the 16 MB threshold


def big_model_with_if() -> onnx.ModelProto:
    """A large Gemm+ReLU, then an If whose then-branch holds a MatMul+ReLU on an outer weight."""
    b = ModelBuilder(seed=5)
    x = b.input("x", [1, WIDTH])
    h = b.relu(b.gemm(x, WIDTH, WIDTH, bias=np.full(WIDTH, -8.0, np.float32), name="big"), "big_relu")
    w_branch = b.const(b.he([WIDTH, 8], WIDTH), "w_branch")
    then_graph = helper.make_graph(
        [
            helper.make_node("MatMul", [h, w_branch], ["t"], name="mm"),
            helper.make_node("Relu", ["t"], ["ty"], name="act"),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("ty", TensorProto.FLOAT, [1, 8])],
    )
    else_graph = helper.make_graph(
        [
            helper.make_node("Sigmoid", [h], ["e"], name="sig"),
            helper.make_node("Slice", ["e", "s0", "s8", "s1"], ["ey"], name="cut"),
        ],
        "else",
        [],
        [helper.make_tensor_value_info("ey", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(np.array([0], np.int64), n) for n in ("s0",)]
        + [
            numpy_helper.from_array(np.array([8], np.int64), "s8"),
            numpy_helper.from_array(np.array([1], np.int64), "s1"),
        ],
    )
    cond = b.const(np.array(True), "cond")
    b.nodes.append(helper.make_node("If", [cond], ["y"], name="If_0", then_branch=then_graph, else_branch=else_graph))
    return b.build(["y"], [[1, 8]])


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    model = big_model_with_if()
    path = folder / "big.onnx"
    onnx.save(model, path)
    assert path.stat().st_size > loader.STRIP_INLINE_WEIGHTS_ABOVE
    return path, model


def test_large_weights_are_read_from_the_file_and_equal(big):
    path, model = big
    loaded = load_model(path)
    assert loaded.inline_location == "big.onnx" and loaded.notes == []
    graph = build_graph(loaded)
    for tensor in model.graph.initializer:
        value = graph.constant(tensor.name)
        np.testing.assert_array_equal(value, numpy_helper.to_array(tensor))
    external = onnx.TensorProto.EXTERNAL
    assert graph.initializers["w_0"].data_location == external  # the 17.6 MB weight is not in the message
    assert graph.initializers["cond"].data_location != external  # small ones stay in it


def test_results_are_identical_with_and_without_the_surgery(big, monkeypatch):
    path, _ = big
    config = Config(samples=8, batch=4)
    mapped = analyse(str(path), config)
    monkeypatch.setattr(loader, "STRIP_INLINE_WEIGHTS_ABOVE", 1 << 62)
    whole = analyse(str(path), config)
    assert load_model(path).inline_location is None
    as_json = lambda r: json.dumps({k: v for k, v in r.to_json().items() if k != "probe"}, sort_keys=True)  # noqa: E731
    assert as_json(mapped) == as_json(whole)
    probe = mapped.to_json()["probe"]
    assert probe["layers"] == whole.to_json()["probe"]["layers"]
    # The probe ran the If branch of the large model (full re-serialization, external data linked).
    assert probe["layers"]["If_0/then/act"]["samples"] == 8
    assert any(f.rule == "RL501" and f.node == "big_relu" for f in mapped.findings)


def test_a_large_model_is_parsed_from_its_headers_and_hashed_whole(big, monkeypatch):
    """The skeleton is read where the surgery looks: the 17.6 MB weight's bytes are never read by the parse
    (only the digest's thread reads them, in reused blocks), and the digest is still of the whole file."""
    path, _ = big
    reads: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, length: int, offset: int) -> bytes:
        reads.append(length)
        return real_pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", counting_pread)
    loaded = load_model(path)
    assert loaded.inline_location == "big.onnx"
    assert sum(reads) < 3 * FileBytes.WINDOW_BYTES < path.stat().st_size // 4
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.file_size == path.stat().st_size


@pytest.mark.parametrize("window", [1, 5, 24, 100, 1 << 20])
def test_the_surgery_on_the_file_equals_the_surgery_on_its_bytes(tmp_path, monkeypatch, window):
    """Headers that cross the read window's end, a window smaller than one header, many small nodes."""
    monkeypatch.setattr(FileBytes, "WINDOW_BYTES", window)
    b = ModelBuilder(seed=3)
    h = b.input("x", [1, 64])
    for index in range(6):
        h = b.relu(b.gemm(h, 64, 64, name=f"fc{index}"), f"act{index}")
    model = b.build([h])
    model.graph.initializer.append(numpy_helper.from_array(np.ones(5000, np.float32), "big"))
    data = model.SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with open(path, "rb") as stream:
        from_file = strip_large_raw_data(FileBytes(stream.fileno(), len(data)), "m.onnx", 1024)
        # a file shorter than it was measured (truncated after its size was read) is malformed: None
        assert strip_large_raw_data(FileBytes(stream.fileno(), len(data) + 50), "m.onnx", 1024) is None
    assert from_file is not None and from_file == strip_large_raw_data(data, "m.onnx", 1024)
    assert from_file[1] == 7  # the six 64 x 64 weights (16 KB each) and the 5,000 values


def test_a_symlinked_large_model_is_parsed_whole(big, tmp_path):
    path, _ = big
    link = tmp_path / "link.onnx"
    os.symlink(path, link)
    assert load_model(link).inline_location is None


def test_the_surgery_gives_up_on_anything_unusual():
    tensor = numpy_helper.from_array(np.ones(20000, np.float32), "w")
    good = helper.make_model(helper.make_graph([], "g", [], [], [tensor])).SerializeToString()
    skeleton, moved = strip_large_raw_data(good, "m.onnx", 1024)
    assert moved == 1 and len(skeleton) < 1000
    parsed = onnx.load_model_from_string(skeleton)
    entries = {e.key: e.value for e in parsed.graph.initializer[0].external_data}
    offset, length = int(entries["offset"]), int(entries["length"])
    assert good[offset : offset + length] == tensor.raw_data
    assert strip_large_raw_data(good, "m.onnx", 1 << 20) is None  # nothing large enough
    assert strip_large_raw_data(good[:-7], "m.onnx", 1024) is None  # truncated
    assert strip_large_raw_data(good + b"\x0b", "m.onnx", 1024) is None  # a group start: malformed
    two_graphs = good + good  # protobuf would merge two graph fields: not ours to rewrite
    assert strip_large_raw_data(two_graphs, "m.onnx", 1024) is None


def test_varints_round_trip():
    for value in (0, 1, 127, 128, 300, 2**32, 2**63 - 1):
        encoded = encode_varint(value)
        assert read_varint(encoded, 0, len(encoded)) == (value, len(encoded))
    assert [f.number for f in iter_fields(encode_varint(8) + encode_varint(150), 0, 3)] == [1]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_bytes_never_raise(data):
    b = ModelBuilder(seed=1)
    x = b.input("x", [1, 64])
    model = b.build([b.relu(b.gemm(x, 64, 64, name="fc"), "act")])
    raw = bytearray(model.SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(raw) // 2, len(raw)))
    result = strip_large_raw_data(bytes(raw[:cut]), "m.onnx", 256)
    assert result is None or (isinstance(result[0], bytes) and result[1] >= 1)


def test_message_depth_counts_nested_messages_and_stops_at_malformed_bytes():
    """model > graph > node > attribute > subgraph > node: 6 levels, counted from the wire format alone."""
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "b", [], [])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    model = helper.make_model(helper.make_graph([node], "g", [], []))
    data = model.SerializeToString()
    descriptor = onnx.ModelProto.DESCRIPTOR
    assert message_depth(data, descriptor, 400) == 6
    assert message_depth(data, descriptor, 5) is None  # beyond the limit
    assert message_depth(data[: len(data) // 2], descriptor, 400) >= 1  # cut short: no exception
    assert message_depth(b"\x3a\xff\xff", descriptor, 400) == 1  # a graph field longer than the bytes
