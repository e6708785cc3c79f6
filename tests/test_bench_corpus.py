"""The false-alarm bench's own measuring instrument (bench/corpus/truth.py), on models built here.

The bench judges relulint by this truth, so it is checked against numpy on a model whose dead
units are planted: a decomposed hard-swish after a Conv is one unit (not a ReLU6), a ReLU after a
MatMul has its units on the last axis, and a unit is dead exactly when it is never positive.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from corpus import truth  # noqa: E402


def _model(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    conv_w = rng.normal(0, 1, (4, 2, 1, 1)).astype(np.float32)
    conv_w[2] = 0.0
    conv_b = np.array([0.0, -100.0, -1.5, 0.0], np.float32)  # 1: always 0; 2: always hard-swish(-1.5) < 0
    mat_w = rng.normal(0, 1, (6, 3)).astype(np.float32)
    mat_b = np.array([0.0, 0.0, -100.0], np.float32)  # feature 2 never positive
    c = helper.make_tensor
    nodes = [
        helper.make_node("Conv", ["img", "cw", "cb"], ["conv"]),
        # hard-swish the way PaddleOCR exports it: conv * Clip(conv + 3, 0, 6) / 6
        helper.make_node("Add", ["conv", "three"], ["shifted"]),
        helper.make_node("Clip", ["shifted", "zero", "six"], ["gate"]),
        helper.make_node("Mul", ["conv", "gate"], ["scaled"]),
        helper.make_node("Div", ["scaled", "six"], ["hswish"]),
        helper.make_node("MatMul", ["vec", "mw"], ["mm"]),
        helper.make_node("Add", ["mm", "mb"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["relu"]),
    ]
    inits = [
        numpy_helper.from_array(conv_w, "cw"),
        numpy_helper.from_array(conv_b, "cb"),
        numpy_helper.from_array(mat_w, "mw"),
        numpy_helper.from_array(mat_b, "mb"),
        c("three", TensorProto.FLOAT, [], [3.0]),
        c("zero", TensorProto.FLOAT, [], [0.0]),
        c("six", TensorProto.FLOAT, [], [6.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "planted",
        [
            helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 2, 5, 5]),
            helper.make_tensor_value_info("vec", TensorProto.FLOAT, ["N", 4, 6]),
        ],
        [
            helper.make_tensor_value_info("hswish", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("relu", TensorProto.FLOAT, None),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return conv_w, conv_b, mat_w


def test_truth_finds_units_and_measures_them_like_numpy(tmp_path):
    path = tmp_path / "planted.onnx"
    _model(path)
    layers = truth.find_layers(onnx.load(path))
    assert [(layer.output, layer.op, layer.axis) for layer in layers] == [
        ("hswish", "hard-swish (decomposed)", 1),
        ("relu", "Relu", -1),
    ]
    assert layers[0].aliases == {"gate", "scaled"}

    rng = np.random.default_rng(1)
    img = rng.normal(0, 1, (10, 2, 5, 5)).astype(np.float32)
    vec = rng.normal(0, 1, (10, 4, 6)).astype(np.float32)

    def batches(size):
        for start in range(0, 10, size):
            yield {"img": img[start : start + size], "vec": vec[start : start + size]}

    measured = truth.measure(path, batches, batch_size=3)
    assert [layer.units for layer in measured] == [4, 3]
    assert measured[0].dead.tolist() == [False, True, True, False]
    # hard-swish passes a gradient below zero: dead in that sense only where it is 0 on every value
    assert measured[0].variant and not measured[1].variant
    assert measured[0].no_gradient.tolist() == [False, True, False, False]
    assert measured[1].dead.tolist() == [False, False, True]
