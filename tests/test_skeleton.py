"""The one skeleton (relulint.skeleton): what stays an initializer, what becomes a typed input, fixed input
shapes, and the model's own functions, opsets and metadata carried over."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from relulint.skeleton import SHAPE_CONSTANTS_UP_TO, typed_skeleton


def _model() -> onnx.ModelProto:
    """x[N,64] -> MatMul(w[64,32]) -> Reshape(target) -> Relu -> local function Double -> y."""
    weight = numpy_helper.from_array(np.ones((64, 32), np.float32), "w")  # 8 KB: above the shape-constant size
    target = numpy_helper.from_array(np.array([-1, 4, 8], np.int64), "target")
    external = numpy_helper.from_array(np.zeros(3, np.float32), "stored_apart")
    external.ClearField("raw_data")
    external.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("length", "12")):
        entry = external.external_data.add()
        entry.key, entry.value = key, value
    default = numpy_helper.from_array(np.zeros(1, np.float32), "overridable")  # also a graph input
    double = helper.make_function(
        "local", "Double", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], [helper.make_opsetid("", 17)]
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Reshape", ["h", "target"], ["r"]),
            helper.make_node("Relu", ["r"], ["a"]),
            helper.make_node("Double", ["a"], ["y"], domain="local"),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64]),
            helper.make_tensor_value_info("overridable", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("untyped", 0, None),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", 4, 8])],
        [weight, target, external, default],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)], functions=[double]
    )
    model.doc_string = "kept"
    helper.set_model_props(model, {"author": "test"})
    return model


def _inputs(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    return {info.name: info for info in model.graph.input}


def _dims(info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in info.type.tensor_type.shape.dim]


def test_every_initializer_becomes_a_typed_input_by_default():
    skeleton = typed_skeleton(_model())
    assert not skeleton.graph.initializer
    inputs = _inputs(skeleton)
    assert list(inputs) == ["x", "overridable", "untyped", "w", "target", "stored_apart"]  # declared once each
    assert inputs["w"].type.tensor_type.elem_type == TensorProto.FLOAT and _dims(inputs["w"]) == [64, 32]
    assert inputs["target"].type.tensor_type.elem_type == TensorProto.INT64 and _dims(inputs["target"]) == [3]
    assert _dims(inputs["x"]) == ["N", 64]  # no shape asked for: the input as the model declares it


def test_small_initializers_in_the_file_stay_when_asked():
    skeleton = typed_skeleton(_model(), SHAPE_CONSTANTS_UP_TO)
    kept = {tensor.name: tensor for tensor in skeleton.graph.initializer}
    assert set(kept) == {"target", "overridable"}  # the weight is too large; stored_apart is external data
    assert list(numpy_helper.to_array(kept["target"])) == [-1, 4, 8]
    assert {"w", "stored_apart"} <= set(_inputs(skeleton)) and "target" not in _inputs(skeleton)


def test_input_shapes_are_fixed_and_an_untyped_input_becomes_float():
    skeleton = typed_skeleton(_model(), SHAPE_CONSTANTS_UP_TO, {"x": (2, 64), "untyped": (3,)})
    inputs = _inputs(skeleton)
    assert _dims(inputs["x"]) == [2, 64] and inputs["x"].type.tensor_type.elem_type == TensorProto.FLOAT
    assert _dims(inputs["untyped"]) == [3] and inputs["untyped"].type.tensor_type.elem_type == TensorProto.FLOAT
    inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
    shapes = {info.name: _dims(info) for info in inferred.graph.value_info}
    assert shapes["h"] == [2, 32] and shapes["r"] == [2, 4, 8]  # the Reshape target's values were there


def test_functions_opsets_and_metadata_are_the_models_own_and_the_checker_accepts_it():
    model = _model()
    del model.graph.input[2]  # the untyped input, which the checker would refuse in the model too
    skeleton = typed_skeleton(model)
    assert [f.name for f in skeleton.functions] == ["Double"]
    assert list(skeleton.opset_import) == list(model.opset_import)
    assert skeleton.ir_version == model.ir_version and skeleton.doc_string == "kept"
    assert {p.key: p.value for p in skeleton.metadata_props} == {"author": "test"}
    assert [n.op_type for n in skeleton.graph.node] == ["MatMul", "Reshape", "Relu", "Double"]
    assert skeleton.graph.name == "g" and [o.name for o in skeleton.graph.output] == ["y"]
    onnx.checker.check_model(skeleton)  # no external file to look for: the external tensor is an input
    assert len(model.graph.initializer) == 4  # the model itself is untouched
