"""The unit view: one model per export pattern, every field of the Layer asserted exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from relulint.graph import build_graph
from relulint.layer_values import bias_vector, weight_matrix
from relulint.loader import load_model
from relulint.modelkit import ModelBuilder
from relulint.units import BiasTerm, Layer, find_layers


def layers_of(model: onnx.ModelProto, tmp_path, name: str = "m.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    graph = build_graph(load_model(path))
    return graph, find_layers(graph)


def test_gemm_with_trans_b(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [2, 5])
    w = np.arange(15, dtype=np.float32).reshape(3, 5)
    y = b.relu(b.gemm(x, 5, 3, weight=w, bias=np.array([1, 2, 3], np.float32), name="fc"), "act")
    graph, layers = layers_of(b.build([y]), tmp_path)
    assert layers == [
        Layer(
            name="act",
            activation_op="Relu",
            family="plain",
            pre_activation="fc_out",
            output="act_out",
            channel_axis=-1,
            linear="fc",
            linear_op="Gemm",
            weight="w_0",
            weight_layout="gemm_transposed",
            bias=(BiasTerm("w_1"),),
            units=3,
            fan_in=5,
            fan_out=3,
        )
    ]
    np.testing.assert_array_equal(weight_matrix(graph, layers[0]), w)
    np.testing.assert_array_equal(bias_vector(graph, layers[0]), [1, 2, 3])


def test_gemm_without_trans_b_and_beta(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [2, 4])
    w = np.arange(8, dtype=np.float32).reshape(2, 4)  # [units, fan_in]
    wt = b.const(np.ascontiguousarray(w.T), "W")  # stored [fan_in, units]
    c = b.const(np.array([1.0, -1.0], np.float32), "C")
    y = b.relu(b.node("Gemm", [x, wt, c], "fc", beta=0.5), "act")
    graph, [layer] = layers_of(b.build([y]), tmp_path)
    assert (layer.weight_layout, layer.units, layer.fan_in, layer.fan_out) == ("gemm", 2, 4, 2)
    assert layer.bias == (BiasTerm("C", 1, 0.5),)
    np.testing.assert_array_equal(weight_matrix(graph, layer), w)
    np.testing.assert_array_equal(bias_vector(graph, layer), [0.5, -0.5])


def test_matmul_add_as_pytorch_exports_linear(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [2, 7, 6])  # [N, T, C]: a 3-D MatMul
    w = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    y = b.relu(b.linear(x, 6, 4, weight=w, bias=np.full(4, 0.5, np.float32), name="proj"), "act")
    graph, layers = layers_of(b.build([y]), tmp_path)
    assert layers == [
        Layer(
            name="act",
            activation_op="Relu",
            family="plain",
            pre_activation="proj_bias_out",
            output="act_out",
            channel_axis=-1,
            linear="proj",
            linear_op="MatMul",
            weight="w_0",
            weight_layout="matmul_right",
            bias=(BiasTerm("w_1"),),
            units=4,
            fan_in=6,
            fan_out=4,
        )
    ]
    np.testing.assert_allclose(weight_matrix(graph, layers[0]), w)


def test_conv_bn_relu(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [1, 3, 8, 8])
    y = b.relu(b.batchnorm(b.conv(x, 3, 16, k=3, name="conv"), 16, name="bn"), "act")
    graph, layers = layers_of(b.build([y]), tmp_path)
    assert layers == [
        Layer(
            name="act",
            activation_op="Relu",
            family="plain",
            pre_activation="bn_out",
            output="act_out",
            channel_axis=1,
            linear="conv",
            linear_op="Conv",
            weight="w_0",
            weight_layout="conv",
            bias=(BiasTerm("w_1"),),
            units=16,
            fan_in=27,
            fan_out=144,
            norm="bn",
            norm_op="BatchNormalization",
            norm_params=(("gamma", "w_2"), ("beta", "w_3"), ("mean", "w_4"), ("var", "w_5")),
        )
    ]
    assert weight_matrix(graph, layers[0]).shape == (16, 27)


def test_conv_add_residual_relu(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [1, 4, 8, 8])
    shortcut = b.relu(b.conv(x, 4, 4, name="conv0"), "act0")
    main = b.conv(shortcut, 4, 4, bias=False, name="conv1")
    y = b.relu(b.add(shortcut, main, "join"), "act1")  # shortcut first: the main branch is still found
    _, layers = layers_of(b.build([y]), tmp_path)
    assert layers[1] == Layer(
        name="act1",
        activation_op="Relu",
        family="plain",
        pre_activation="join_out",
        output="act1_out",
        channel_axis=1,
        linear="conv1",
        linear_op="Conv",
        weight="w_2",
        weight_layout="conv",
        units=4,
        fan_in=36,
        fan_out=36,
        residual=True,
    )
    assert not layers[0].residual


def test_clip_as_relu6_and_max_with_zero(tmp_path):
    b = ModelBuilder(opset=13)
    x = b.input("x", [1, 3])
    h = b.gemm(x, 3, 3, name="fc1")
    lo, hi = b.const(np.array(0.0, np.float32), "lo"), b.const(np.array(6.0, np.float32), "hi")
    h = b.node("Clip", [h, lo, hi], "relu6")
    h = b.gemm(h, 3, 3, name="fc2")
    h = b.node("Max", [h, b.const(np.zeros(1, np.float32), "zero")], "max0")
    h = b.gemm(h, 3, 3, name="fc3")
    h = b.node("Clip", [h, b.const(np.array(-1.0, np.float32), "minus1"), hi], "not_relu")  # min -1: not ReLU
    _, layers = layers_of(b.build([h]), tmp_path)
    assert [(layer.name, layer.activation_op, layer.family, layer.linear) for layer in layers] == [
        ("relu6", "Clip", "plain", "fc1"),
        ("max0", "Max", "plain", "fc2"),
    ]


def test_clip_with_min_attribute_in_old_opset(tmp_path):
    b = ModelBuilder(opset=9)
    x = b.input("x", [1, 3])
    y = b.node("Clip", [b.gemm(x, 3, 3, name="fc")], "relu6", min=0.0, max=6.0)
    _, layers = layers_of(b.build([y]), tmp_path)
    assert [(layer.name, layer.family, layer.linear) for layer in layers] == [("relu6", "plain", "fc")]


def test_variants_are_recognised(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [1, 4])
    h = x
    ops = ["LeakyRelu", "Elu", "Selu", "Celu", "Softplus", "ThresholdedRelu", "HardSwish", "Mish"]
    for op in ops:
        h = b.node(op, [b.gemm(h, 4, 4)], f"act_{op}")
    h = b.node("PRelu", [b.gemm(h, 4, 4), b.const(np.full(4, 0.1, np.float32))], "act_PRelu")
    h = b.node("Gelu", [b.gemm(h, 4, 4)], "act_Gelu", domain="")
    model = b.build([h])
    model.opset_import[0].version = 20  # Gelu arrived in opset 20
    _, layers = layers_of(model, tmp_path)
    assert [(layer.activation_op, layer.family) for layer in layers] == [
        (op, "variant") for op in ops + ["PRelu", "Gelu"]
    ]
    assert all(layer.linear_op == "Gemm" and layer.units == 4 for layer in layers)


def test_weights_in_constant_nodes(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [1, 3])
    w = np.array([[1, 2, 3], [4, 5, 6]], np.float32)  # [units, fan_in]
    b.nodes.append(helper.make_node("Constant", [], ["Wc"], name="const_w", value=numpy_helper.from_array(w.T.copy())))
    b.nodes.append(helper.make_node("Constant", [], ["bc"], name="const_b", value_floats=[0.5, -0.5]))
    y = b.relu(b.node("Add", [b.node("MatMul", [x, "Wc"], "mm"), "bc"], "bias_add"), "act")
    graph, [layer] = layers_of(b.build([y]), tmp_path)
    assert (layer.linear, layer.weight, layer.weight_layout, layer.bias) == (
        "mm",
        "Wc",
        "matmul_right",
        (BiasTerm("bc"),),
    )
    np.testing.assert_array_equal(weight_matrix(graph, layer), w)
    np.testing.assert_array_equal(bias_vector(graph, layer), [0.5, -0.5])


def test_weights_behind_dequantize_linear_and_constant_chain(tmp_path):
    b = ModelBuilder(opset=13)
    x = b.input("x", [1, 2, 4, 4])
    q = np.array([[[[10]], [[-20]]], [[[30]], [[0]]], [[[5]], [[5]]]], np.int8)  # [3, 2, 1, 1]
    scale = b.const(np.array([0.1, 0.2, 0.5], np.float32), "scale")
    zero = b.const(np.zeros(3, np.int8), "zp")
    deq = b.node("DequantizeLinear", [b.const(q, "Wq"), scale, zero], "deq", axis=0)
    ident = b.node("Identity", [deq], "ident")
    y = b.relu(b.node("Conv", [x, ident], "conv", kernel_shape=[1, 1]), "act")
    graph, [layer] = layers_of(b.build([y]), tmp_path)
    assert (layer.weight, layer.units, layer.fan_in, layer.bias) == ("ident_out", 3, 2, ())
    np.testing.assert_allclose(weight_matrix(graph, layer), [[1.0, -2.0], [6.0, 0.0], [2.5, 2.5]])
    np.testing.assert_array_equal(bias_vector(graph, layer), [0, 0, 0])


def test_float16_weights(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [1, 3], TensorProto.FLOAT16)
    w = np.array([[1, -2, 3], [0.5, 0.25, -1]], np.float16)
    y = b.relu(b.node("Gemm", [x, b.const(w, "W16"), b.const(np.zeros(2, np.float16), "b16")], "fc", transB=1), "act")
    model = b.build([y], [[1, 2]])
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    graph, [layer] = layers_of(model, tmp_path)
    assert (layer.weight, layer.units, layer.fan_in) == ("W16", 2, 3)
    matrix = weight_matrix(graph, layer)
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, w.astype(np.float32))


def _branch(name: str, x: str, w: np.ndarray, op: str) -> onnx.GraphProto:
    nodes = [
        helper.make_node("MatMul", [x, f"{name}_W"], ["h"], name="MatMul_0"),
        helper.make_node(op, ["h"], ["y"], name="Act_1"),
    ]
    return helper.make_graph(
        nodes,
        name,
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w, f"{name}_W")],
    )


def test_relu_inside_if_branch(tmp_path):
    w = np.ones((3, 2), np.float32)
    then_g, else_g = _branch("then_g", "x", w, "Relu"), _branch("else_g", "x", w, "Sigmoid")
    node = helper.make_node("If", ["cond"], ["out"], name="If_0", then_branch=then_g, else_branch=else_g)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g, layers = layers_of(model, tmp_path)
    assert layers == [
        Layer(
            name="If_0/then/Act_1",
            activation_op="Relu",
            family="plain",
            pre_activation="If_0/then/h",
            output="If_0/then/y",
            channel_axis=-1,
            linear="If_0/then/MatMul_0",
            linear_op="MatMul",
            weight="If_0/then/then_g_W",
            weight_layout="matmul_right",
            units=2,
            fan_in=3,
            fan_out=2,
            scope="If_0/then",
        )
    ]
    # The outer input reaches the branch's MatMul; the branch output flows into the If node.
    assert g.nx.has_edge("If_0/then/Act_1", "If_0")
    assert {n.id for n in g.consumers("x")} == {"If_0/then/MatMul_0", "If_0/else/MatMul_0"}


def test_model_local_function_is_inlined(tmp_path):
    func = helper.make_function(
        "local",
        "DenseRelu",
        ["X", "W", "B"],
        ["Y"],
        [
            helper.make_node("Gemm", ["X", "W", "B"], ["H"], name="dense", transB=1),
            helper.make_node("Relu", ["H"], ["Y"], name="act"),
        ],
        [helper.make_opsetid("", 17)],
    )
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), "W")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "B")
    call = helper.make_node("DenseRelu", ["x", "W", "B"], ["y"], name="call", domain="local")
    graph = helper.make_graph(
        [call],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [w, bias],
    )
    model = helper.make_model(
        graph, functions=[func], opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    )
    graph_model, [layer] = layers_of(model, tmp_path)
    assert (layer.activation_op, layer.linear_op, layer.weight, layer.units, layer.fan_in) == (
        "Relu",
        "Gemm",
        "W",
        3,
        3,
    )
    np.testing.assert_array_equal(weight_matrix(graph_model, layer), np.eye(3))


def test_decomposed_layernorm_between_linear_and_relu(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [2, 4])
    h = b.linear(x, 4, 4, name="proj")
    mean = b.node("ReduceMean", [h], "mean", axes=[-1])
    centered = b.node("Sub", [h, mean], "center")
    var = b.node("ReduceMean", [b.node("Pow", [centered, b.const(np.array(2.0, np.float32))], "pow")], "var", axes=[-1])
    std = b.node("Sqrt", [b.node("Add", [var, b.const(np.array(1e-5, np.float32))], "eps")], "sqrt")
    normed = b.node("Div", [centered, std], "div")
    scaled = b.node("Mul", [normed, b.const(np.ones(4, np.float32))], "gamma")
    affine = b.node("Add", [scaled, b.const(np.zeros(4, np.float32))], "beta")
    y = b.relu(affine, "act")
    _, [layer] = layers_of(b.build([y]), tmp_path)
    assert (layer.linear, layer.norm, layer.norm_op) == ("proj", "div", "LayerNormalization (decomposed)")
    assert layer.bias == (BiasTerm("w_1"),)  # the Add after the norm is its beta, not the layer's bias


def test_sub_bias_conv_transpose_and_matmul_left(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [1, 4, 5, 5])
    wt = np.random.default_rng(1).standard_normal((4, 3, 2, 2)).astype(np.float32)  # [C, M/g, k, k]
    up = b.node("ConvTranspose", [x, b.const(wt, "Wt")], "deconv", kernel_shape=[2, 2])
    act = b.relu(b.node("Sub", [up, b.const(np.full((1, 3, 1, 1), 2.0, np.float32), "shift")], "shift_sub"), "act")
    z = b.input("z", [6, 2])
    left = b.relu(b.node("MatMul", [b.const(np.ones((5, 6), np.float32), "L"), z], "mm_left"), "act_left")
    graph, layers = layers_of(b.build([act, left]), tmp_path)
    deconv, mm = layers
    assert (deconv.linear_op, deconv.units, deconv.fan_in, deconv.bias) == (
        "ConvTranspose",
        3,
        16,
        (BiasTerm("shift", -1),),
    )
    np.testing.assert_array_equal(bias_vector(graph, deconv), [-2, -2, -2])
    matrix = weight_matrix(graph, deconv)
    assert matrix.shape == (3, 16)
    np.testing.assert_array_equal(matrix[1], wt[:, 1].reshape(-1))
    assert (mm.weight_layout, mm.units, mm.fan_in, mm.channel_axis) == ("matmul_left", 5, 6, -2)


def test_computed_weight_is_unknown_but_still_a_layer(tmp_path):
    b = ModelBuilder()
    x = b.input("x", [2, 3])
    w = b.input("w", [3, 4])
    y = b.relu(b.node("MatMul", [x, w], "mm"), "act")
    graph, [layer] = layers_of(b.build([y], [[2, 4]]), tmp_path)
    assert (layer.linear, layer.weight, layer.units, layer.fan_in) == ("mm", None, 4, None)
    assert weight_matrix(graph, layer) is None


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "Softmax"])
def test_other_activations_are_not_layers(tmp_path, op):
    b = ModelBuilder()
    x = b.input("x", [1, 3])
    y = b.node(op, [b.gemm(x, 3, 3)])
    _, layers = layers_of(b.build([y]), tmp_path)
    assert layers == []


@pytest.mark.parametrize("how", ["attribute", "outputs", "eval"])
def test_batchnorm_exported_in_training_mode_is_marked_and_noted(tmp_path, how):
    from relulint.config import Config
    from relulint.engine import analyse

    b = ModelBuilder(seed=0)
    y = b.batchnorm(b.conv(b.input("x", ["n", 3, 8, 8]), 3, 4, name="conv"), 4, name="bn")
    model = b.build([b.global_pool_flatten(b.relu(y, "act"))])
    bn = next(node for node in model.graph.node if node.name == "bn")
    if how == "attribute":
        bn.attribute.append(helper.make_attribute("training_mode", 1))
    elif how == "outputs":
        bn.output.extend(["bn_running_mean", "bn_running_var"])
    model.opset_import[0].version = max(model.opset_import[0].version, 15)
    _, [layer] = layers_of(model, tmp_path)
    assert layer.norm == "bn" and layer.norm_training_mode is (how != "eval")
    result = analyse(str(tmp_path / "m.onnx"), Config(probe=False))
    noted = [n for n in result.notes if "training mode" in n.message]
    assert (noted[0].node if noted else None) == ("bn" if how != "eval" else None)


@pytest.mark.parametrize("entry", ["build_graph", "find_layers"])
def test_graph_and_unit_view_pause_the_collector_and_restore_its_state(tmp_path, monkeypatch, entry):
    """Called as a library, building the graph and its unit view runs with the cyclic collector paused
    (it would rescan their many small objects again and again); the caller's setting comes back, also
    after an error."""
    import gc

    import relulint.graph as graph_module
    import relulint.units as units_module

    b = ModelBuilder()
    y = b.relu(b.gemm(b.input("x", [2, 5]), 5, 3, name="fc"), "act")
    path = tmp_path / "m.onnx"
    onnx.save(b.build([y]), path)
    loaded = load_model(path)
    graph = build_graph(loaded)
    module, inner = (graph_module, "_build_graph") if entry == "build_graph" else (units_module, "_find_layers")
    run = (lambda: build_graph(loaded)) if entry == "build_graph" else (lambda: find_layers(graph))
    real = getattr(module, inner)
    seen: list[bool] = []

    def spy(*args):
        seen.append(gc.isenabled())
        return real(*args)

    def fail(*args):
        seen.append(gc.isenabled())
        raise RuntimeError("planted")

    was_enabled = gc.isenabled()
    try:
        monkeypatch.setattr(module, inner, spy)
        for enabled in (True, False):
            gc.enable() if enabled else gc.disable()
            run()
            assert gc.isenabled() is enabled
        monkeypatch.setattr(module, inner, fail)
        gc.enable()
        with pytest.raises(RuntimeError, match="planted"):
            run()
        assert gc.isenabled()
    finally:
        gc.enable() if was_enabled else gc.disable()
    assert seen == [False, False, False]
