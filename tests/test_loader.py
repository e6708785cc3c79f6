"""Loading: protobuf files, external data (only beside the model), checker notes, model facts."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from relulint.config import Config
from relulint.engine import analyse
from relulint.errors import ModelError
from relulint.graph import build_graph, count_parameters
from relulint.layer_values import weight_matrix
from relulint.loader import load_model
from relulint.modelkit import ModelBuilder
from relulint.units import find_layers


def small_mlp(seed: int = 0) -> onnx.ModelProto:
    b = ModelBuilder(seed=seed)
    x = b.input("x", [1, 8])
    y = b.relu(b.gemm(x, 8, 16, name="fc1"), "act1")
    return b.build([b.gemm(y, 16, 2, name="fc2")])


def save_external(model: onnx.ModelProto, folder, location: str = "weights.bin") -> str:
    path = folder / "model.onnx"
    onnx.save(
        model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0
    )
    return str(path)


def set_location(path: str, location: str) -> None:
    model = onnx.load(path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, path)


def test_reports_opset_ir_version_and_producer(tmp_path):
    path = tmp_path / "m.onnx"
    model = small_mlp()
    model.producer_name, model.producer_version = "pytorch", "2.13.0"
    onnx.save(model, path)
    loaded = load_model(path)
    info = loaded.info()
    assert (info["opset"], info["ir_version"], info["producer"]) == (17, 8, {"name": "pytorch", "version": "2.13.0"})
    assert len(loaded.sha256) == 64 and loaded.notes == []
    assert count_parameters(build_graph(loaded)) == 8 * 16 + 16 + 16 * 2 + 2


def test_external_data_beside_the_model_is_read_from_its_file(tmp_path):
    model = small_mlp()
    expected = numpy_helper.to_array(model.graph.initializer[0])
    path = save_external(model, tmp_path)
    graph = build_graph(load_model(path))
    [layer] = find_layers(graph)
    matrix = weight_matrix(graph, layer)
    np.testing.assert_array_equal(matrix, expected)
    assert graph.initializers[layer.weight].data_location == onnx.TensorProto.EXTERNAL  # not in the message


def test_external_data_in_a_subfolder_is_allowed(tmp_path):
    (tmp_path / "data").mkdir()
    path = save_external(small_mlp(), tmp_path, "data/w.bin")
    assert load_model(path).notes == []


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("/etc/passwd", "absolute location"),
        ("../outside.bin", "climbs out of the model's folder"),
        ("sub/../../outside.bin", "climbs out of the model's folder"),
    ],
)
def test_external_data_outside_the_folder_is_refused(tmp_path, location, problem):
    folder = tmp_path / "model"
    folder.mkdir()
    path = save_external(small_mlp(), folder)
    set_location(path, location)
    with pytest.raises(ModelError) as error:
        load_model(path)
    assert problem in error.value.problem and error.value.path == path


def test_external_data_through_a_symlink_that_leaves_is_refused(tmp_path):
    folder, outside = tmp_path / "model", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    path = save_external(small_mlp(), folder)
    os.replace(folder / "weights.bin", outside / "weights.bin")
    os.symlink(outside, folder / "link")
    set_location(path, "link/weights.bin")
    with pytest.raises(ModelError, match="symbolic link"):
        load_model(path)


def test_symlink_that_stays_inside_is_fine(tmp_path):
    path = save_external(small_mlp(), tmp_path)
    os.symlink(tmp_path / "weights.bin", tmp_path / "alias.bin")
    set_location(path, "alias.bin")
    assert load_model(path).notes == []


def test_missing_or_short_external_data_becomes_a_note(tmp_path):
    path = save_external(small_mlp(), tmp_path)
    with open(tmp_path / "weights.bin", "r+b") as stream:
        stream.truncate(100)  # fc1's weight needs 512 bytes
    result = analyse(path, Config(probe=False))
    assert result.error is None
    assert any("fc1" not in n.message and "needs bytes" in n.message for n in result.notes)
    os.remove(tmp_path / "weights.bin")
    result = analyse(path, Config(probe=False))
    assert result.error is None and any("is missing" in n.message for n in result.notes)
    assert result.layers[0]["metrics"] == {}  # no statistics from weights that are not there


def test_model_over_2gb_with_external_data(tmp_path):
    """A 2.2 GB weight as a sparse external file: loads without reading it."""
    b = ModelBuilder()
    x = b.input("x", [1, 1024])
    big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[1024, 563_200])
    big.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "big.bin"), ("offset", "0"), ("length", str(1024 * 563_200 * 4))):
        entry = big.external_data.add()
        entry.key, entry.value = key, value
    b.initializers.append(big)
    y = b.node("Sigmoid", [b.node("MatMul", [x, "big"], "mm")], "sig")
    model = b.build([y], [[1, 563_200]])
    with open(tmp_path / "big.bin", "wb") as stream:
        stream.truncate(1024 * 563_200 * 4)  # sparse: takes no disk space
    path = tmp_path / "big.onnx"
    onnx.save(model, path)
    loaded = load_model(path)
    assert loaded.file_size < 10_000
    assert count_parameters(build_graph(loaded)) == 1024 * 563_200 > 2**29


def test_checker_complaints_become_a_note(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [1, 4])
    y = b.relu(b.gemm(x, 4, 4, name="fc"), "act")
    model = b.build([y])
    model.graph.node[0].attribute.append(helper.make_attribute("no_such_attribute", 1))
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    result = analyse(str(path), Config(probe=False))
    assert result.error is None
    assert [n.kind for n in result.notes] == ["checker"]
    assert "onnx checker" in result.notes[0].message and "no_such_attribute" in result.notes[0].message
    assert len(result.layers) == 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "file is empty"),
        (b'{"not": "onnx"}', "not an ONNX model"),
        (b"\x08\x07", "it has no graph"),  # a valid ModelProto holding only ir_version
    ],
)
def test_unreadable_files(tmp_path, content, problem):
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=problem):
        load_model(path)


def test_truncated_protobuf_and_missing_file(tmp_path):
    data = small_mlp().SerializeToString()
    path = tmp_path / "t.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not an ONNX model"):
        load_model(path)
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "absent.onnx")


def test_max_model_size_is_enforced_before_reading(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(small_mlp(), path)
    with pytest.raises(ModelError, match="over the 100-byte limit"):
        load_model(path, max_size=100)


def test_subgraph_nodes_are_named_by_path_and_nested(tmp_path):
    def loop_body(depth: int) -> onnx.GraphProto:
        nodes = [helper.make_node("Relu", ["v"], ["r"], name="Relu_0")]
        if depth:
            inner = helper.make_node(
                "If", ["c"], ["o"], name="If_1", then_branch=loop_body(depth - 1), else_branch=loop_body(depth - 1)
            )
            nodes.append(inner)
        return helper.make_graph(nodes, f"b{depth}", [], [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1])])

    node = helper.make_node("If", ["c"], ["out"], name="If_0", then_branch=loop_body(1), else_branch=loop_body(0))
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "nested.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    g = build_graph(load_model(path))
    assert sorted(g.nodes) == sorted(
        [
            "If_0",
            "If_0/then/Relu_0",
            "If_0/then/If_1",
            "If_0/then/If_1/then/Relu_0",
            "If_0/then/If_1/else/Relu_0",
            "If_0/else/Relu_0",
        ]
    )
    # Each branch's local "r" is its own tensor; the outer "v" is shared.
    assert g.producer("If_0/then/If_1/then/r").id == "If_0/then/If_1/then/Relu_0"
    assert len(g.consumers("v")) == 4


def test_the_sha256_is_computed_only_for_the_reports_that_show_it(tmp_path, monkeypatch):
    """Text and GitHub output never show it: the file is not hashed for them. JSON shows the file's SHA-256,
    and a digest asked for later (``load_model(digest=False)``) is still the file's."""
    import hashlib
    import json

    from click.testing import CliRunner

    from relulint import loaded as loaded_module
    from relulint.cli import main

    path = tmp_path / "m.onnx"
    onnx.save(small_mlp(), path)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    lazy = load_model(path, digest=False)
    assert lazy.digest._thread is None and lazy.sha256 == expected
    hashed: list[str] = []
    real = loaded_module.Digest._compute

    def counting(self):
        hashed.append("hashed")
        real(self)

    monkeypatch.setattr(loaded_module.Digest, "_compute", counting)
    runner = CliRunner()
    text = runner.invoke(main, ["--no-probe", str(path)])
    assert text.exit_code in (0, 1), text.output
    assert hashed == []
    as_json = runner.invoke(main, ["--no-probe", "--format", "json", str(path)])
    assert hashed == ["hashed"]
    assert json.loads(as_json.stdout)["models"][0]["sha256"] == expected


def test_each_tensor_is_judged_readable_once_per_analysis(tmp_path, monkeypatch):
    """The graph, the weight readers and the statistics all ask whether a tensor can be read; the loaded
    model remembers the answer for each tensor object."""
    from relulint import tensors

    path = tmp_path / "m.onnx"
    onnx.save(small_mlp(), path)
    judged: list[int] = []
    real = tensors._tensor_problem

    def counting(tensor, loaded):
        judged.append(id(tensor))
        return real(tensor, loaded)

    monkeypatch.setattr(tensors, "_tensor_problem", counting)
    result = analyse(str(path), Config(probe=False))
    assert result.error is None and judged
    assert len(judged) == len(set(judged))
