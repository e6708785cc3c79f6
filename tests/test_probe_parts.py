"""Parts of the probe: input making, data streaming, the reductions for every layout and opset, progress."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from relulint.config import Config
from relulint.engine import analyse
from relulint.modelkit import ModelBuilder
from relulint.probe.inputs import (
    DataError,
    InputSpec,
    data_batches,
    parse_distribution,
    synthetic_batch,
    synthetic_batches,
)
from relulint.probe.runner import Progress


def test_synthetic_batches_follow_the_specs():
    specs = [
        InputSpec("x", "float32", (4, 3), batched=True),
        InputSpec("ids", "int64", (4, 5), batched=True, int_high=7),
        InputSpec("flag", "bool", (1,), batched=False),
    ]
    rng = np.random.default_rng(0)
    feed = synthetic_batch(specs, 4, parse_distribution("uniform:2,3"), rng)
    assert feed["x"].dtype == np.float32 and feed["x"].shape == (4, 3)
    assert 2 <= feed["x"].min() and feed["x"].max() <= 3
    assert feed["ids"].dtype == np.int64 and 0 <= feed["ids"].min() and feed["ids"].max() < 7
    assert feed["flag"].dtype == np.bool_ and feed["flag"].shape == (1,)
    sizes = [batch["x"].shape[0] for batch in synthetic_batches(specs, 4, 10, parse_distribution("normal"), 0)]
    assert sizes == [4, 4, 2]


def test_distributions_parse():
    assert parse_distribution("normal").describe() == "normal(mean 0, std 1)"
    assert parse_distribution("normal:0.5,2").describe() == "normal(mean 0.5, std 2)"
    assert parse_distribution("uniform:-1,1").kind == "uniform"
    with pytest.raises(ValueError):
        parse_distribution("cauchy:0,1")


def test_data_batches_stream_across_files(tmp_path):
    spec = [InputSpec("x", "float32", (3, 2), batched=True)]
    np.save(tmp_path / "1.npy", np.arange(10, dtype=np.float64).reshape(5, 2))
    np.savez(tmp_path / "2.npz", x=np.arange(10, 20).reshape(5, 2))
    batches = list(data_batches(spec, str(tmp_path), 3, 9))
    assert [b["x"].shape[0] for b in batches] == [3, 3, 3]
    assert batches[1]["x"].dtype == np.float32
    rows = np.concatenate([b["x"] for b in batches])
    # 9 of the 10 samples, drawn across both files, in file order, each whole
    assert np.all(rows[:, 1] == rows[:, 0] + 1) and np.all(np.diff(rows[:, 0]) > 0)
    assert len(set(rows[:, 0] // 10)) == 2
    every = np.concatenate([b["x"] for b in data_batches(spec, str(tmp_path), 3, 0)])
    assert np.array_equal(every.ravel(), np.arange(20))
    fixed = [InputSpec("x", "float32", (4, 2), batched=False)]
    assert [b["x"].shape[0] for b in data_batches(fixed, str(tmp_path), 3, 100)] == [4, 4]  # a partial batch is dropped


def test_bad_data_is_explained(tmp_path):
    spec = [InputSpec("x", "float32", (3, 2), batched=True)]
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot read objects.npy"):
        list(data_batches(spec, str(tmp_path / "objects.npy"), 3, 9))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .npz or .npy"):
        list(data_batches(spec, str(tmp_path / "empty"), 3, 9))
    np.save(tmp_path / "rank.npy", np.zeros((3, 2, 1), np.float32))
    with pytest.raises(DataError, match="needs rank 2"):
        list(data_batches(spec, str(tmp_path / "rank.npy"), 3, 9))


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_only_when_slow():
    quiet = io.StringIO()
    progress = Progress("m.onnx", quiet)
    progress.started -= 10
    progress.update(1, 4)
    progress.close()
    assert quiet.getvalue() == ""
    terminal = FakeTerminal()
    progress = Progress("m.onnx", terminal)
    progress.update(1, 4)  # under a second: nothing yet
    assert terminal.getvalue() == ""
    progress.started -= 10
    progress.update(2, 4)
    assert "probe m.onnx: [############............] 2/4 batches" in terminal.getvalue()
    progress.close()
    assert terminal.getvalue().endswith("\r\x1b[K")


# ---- reductions for each layout, checked against the activations ---------------------------------------


def reference(model, feed, tensors):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in tensors:
        copy.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(tensors, session.run(tensors, feed)))


def check_layer(tmp_path, model, data, layer, tensor, axis):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    np.save(tmp_path / "d.npy", data)
    result = analyse(str(path), Config(select=("RL5",), data=str(tmp_path / "d.npy"), batch=3, samples=len(data)))
    assert result.error is None
    assert not [n for n in result.notes if "probe" in n.message], result.notes
    measured = result.analyses.to_json()["probe"]["layers"][layer]
    act = reference(model, {model.graph.input[0].name: data}, [tensor])[tensor]
    per_unit = np.moveaxis(act, axis, -1).reshape(-1, act.shape[axis]).astype(np.float64)
    assert measured["units"] == act.shape[axis] and measured["samples"] == len(data)
    assert np.allclose(measured["positive_rate"], (per_unit > 0).mean(axis=0), atol=1e-6)
    assert np.allclose(measured["max"], per_unit.max(axis=0), rtol=1e-5)
    assert np.allclose(measured["mean"], per_unit.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert np.allclose(measured["std"], per_unit.std(axis=0), rtol=1e-3, atol=1e-4)
    return measured


def test_matmul_with_a_constant_left_operand(tmp_path):
    """W @ X gives [N, units, Q]: units on axis -2."""
    b = ModelBuilder(seed=6)
    x = b.input("x", ["N", 8, 5])
    bias = np.zeros((16, 1), np.float32)
    bias[:4] = -50
    y = b.node("Add", [b.node("MatMul", [b.const(b.he([16, 8], 8)), x], "mm"), b.const(bias)])
    model = b.build([b.relu(y, "relu")])
    data = np.random.default_rng(0).standard_normal((7, 8, 5)).astype(np.float32)
    measured = check_layer(tmp_path, model, data, "relu", "relu_out", 1)
    assert measured["dead"] == 4


@pytest.mark.parametrize("opset", [10, 12, 17, 18])
def test_old_and_new_opsets(tmp_path, opset):
    """Reduce axes move from attributes to inputs (13, 18) and Clip's bounds too (11)."""
    b = ModelBuilder(seed=7, opset=opset)
    x = b.input("x", ["N", 4, 6])
    y = b.relu(b.node("MatMul", [x, b.const(b.he([6, 8], 6))], "mm"), "relu_seq")
    z = b.relu(
        b.conv(
            b.node("Unsqueeze", [x], axes=[1]) if opset < 13 else b.node("Unsqueeze", [x, b.const(np.array([1]))]),
            1,
            8,
            3,
            name="conv",
        ),
        "relu_conv",
    )
    model = b.build([y, z])
    data = np.random.default_rng(1).standard_normal((5, 4, 6)).astype(np.float32)
    check_layer(tmp_path, model, data, "relu_seq", "relu_seq_out", 2)
    check_layer(tmp_path, model, data, "relu_conv", "relu_conv_out", 1)


def test_leaky_relu_counts_only_positive_outputs(tmp_path):
    b = ModelBuilder(seed=8)
    x = b.input("x", ["N", 3, 6, 6])
    bias = np.zeros(8, np.float32)
    bias[:2] = -100
    model = b.build([b.leaky_relu(b.conv(x, 3, 8, 3, bias=bias, name="conv"), 0.1, "leaky")])
    data = np.random.default_rng(2).standard_normal((4, 3, 6, 6)).astype(np.float32)
    measured = check_layer(tmp_path, model, data, "leaky", "leaky_out", 1)
    # never positive, but still on LeakyReLU's sloped side: not dead
    assert measured["never_positive"] == 2 and measured["dead"] == 0 and min(measured["max"][:2]) < 0


def test_layers_in_a_loop_body_are_skipped_with_a_note(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [2, 4])
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Relu", ["state"], ["state_out"], name="body_relu"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, 4]),
        ],
    )
    trip, cond = b.const(np.array(3, np.int64)), b.const(np.array(True))
    b.nodes.append(helper.make_node("Loop", [trip, cond, x], ["loop_out"], name="loop", body=body))
    y = b.relu(b.gemm("loop_out", 4, 8, name="fc"), "relu")
    path = tmp_path / "loop.onnx"
    onnx.save(b.build([y], output_shapes=[[2, 8]]), path)
    result = analyse(str(path), Config(select=("RL5",)))
    assert "relu" in result.analyses.to_json()["probe"]["layers"]
    assert "loop/body/body_relu" in result.analyses.to_json()["probe"]["skipped"]
    assert any("does not measure 1 layer" in n.message and "Loop" in n.message for n in result.notes)


def test_many_small_layers_are_reduced_together(tmp_path):
    """Small [rows, units] layers share one Concat and one set of reductions; the counts stay per layer."""
    from relulint.graph import build_graph
    from relulint.loader import load_model
    from relulint.probe.instrument import plan
    from relulint.probe.shapes import infer_shapes
    from relulint.probe.specs import input_specs
    from relulint.units import find_layers

    b = ModelBuilder(seed=9)
    y = b.input("x", ["N", 6])
    for index in range(12):
        bias = np.zeros(6, np.float32)
        bias[: index % 4] = -100
        y = b.relu(b.gemm(y, 6, 6, bias=bias, name=f"fc{index}"), f"relu{index}")
    model = b.build([y])
    path = tmp_path / "deep.onnx"
    onnx.save(model, path)
    graph = build_graph(load_model(str(path)))
    specs = input_specs(graph, Config(), 4).specs
    taps = plan(graph, find_layers(graph), infer_shapes(graph, specs)).taps
    assert len({tap.outputs for tap in taps}) == 1 and [tap.offset for tap in taps[:3]] == [0, 6, 12]
    data = np.random.default_rng(3).standard_normal((9, 6)).astype(np.float32)
    measured = check_layer(tmp_path, model, data, "relu5", "relu5_out", 1)
    assert measured["dead"] >= 1
