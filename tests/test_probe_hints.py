"""When onnxruntime rejects the default dims, the sizes the model hints at are tried before the blind retries."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from relulint.config import Config
from relulint.engine import analyse
from relulint.graph import build_graph
from relulint.loader import load_model
from relulint.probe.hints import shape_hints
from relulint.probe.specs import input_specs


def reshape_model(width=51, rows=3, metadata=None, flatten_gemm=False):
    """x [N, L] -> Reshape [0, rows, width // rows] -> MatMul -> Relu, or Flatten -> Gemm [K, U]: only L =
    ``width`` runs. Unit 1's bias is -100: dead on any input of unit scale."""
    units = 4
    if flatten_gemm:
        nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "W", "b"], ["m"])]
        weights = {"W": np.full((width, units), 0.1, np.float32)}
        shape = ["N", "L"]
    else:
        nodes = [
            helper.make_node("Reshape", ["x", "target"], ["r"]),
            helper.make_node("MatMul", ["r", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["m"]),
        ]
        weights = {
            "target": np.array([0, rows, width // rows], np.int64),
            "W": np.random.default_rng(0).normal(0, 0.3, (width // rows, units)).astype(np.float32),
        }
        shape = ["N", "L"]
    weights["b"] = np.array([0.0, -100.0, 0.0, 0.0], np.float32)
    nodes.append(helper.make_node("Relu", ["m"], ["y"], name="act"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def hints_of(tmp_path, model):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    graph = build_graph(load_model(str(path)))
    return shape_hints(graph, input_specs(graph, Config(), 8).specs)


def test_the_hints_a_model_gives(tmp_path):
    hints = hints_of(tmp_path, reshape_model())
    assert hints.sizes == {"x": {1: 51}}
    assert hints.sources == ["'x' dim 1 = 51 (Reshape 'Reshape_0' needs 51 values per sample)"]
    assert hints_of(tmp_path, reshape_model(width=40, flatten_gemm=True)).sizes == {"x": {1: 40}}
    told = hints_of(tmp_path, reshape_model(metadata={"input_shape": "1x51"}))
    assert told.sizes == {"x": {1: 51}} and "metadata 'input_shape' = '1x51'" in told.sources[0]


def probe(path, **config):
    result = analyse(str(path), Config(select=("RL5",), **config))
    assert result.error is None, result.error
    return result


def test_default_dims_rejected_then_the_reshape_constant_is_used(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(reshape_model(), path)  # 51 is none of the default sizes (32, 64, ...): only the hint runs
    result = probe(path)
    layer = result.analyses.to_json()["probe"]["layers"]["act"]
    assert layer["dead"] == 1 and layer["positive_rate"][1] == 0
    (note,) = [n.message for n in result.notes if "rejected the default dims" in n.message]
    assert "'x' dim 1 = 32" in note and "the sizes the model hints at: 'x' dim 1 = 51 (Reshape" in note
    assert not [n for n in result.notes if "did not run" in n.message]


def test_a_hint_from_flatten_and_gemm(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(reshape_model(width=40, flatten_gemm=True), path)
    result = probe(path)
    assert result.analyses.to_json()["probe"]["layers"]["act"]["dead"] == 1
    assert any("Flatten 'Flatten_0' needs 40 values per sample" in n.message for n in result.notes)
