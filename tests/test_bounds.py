"""RL601/RL602 and the bound propagation behind them: soundness is tested, not assumed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from relulint.bounds import kernels
from relulint.bounds.analysis import run_bounds_analysis
from relulint.bounds.result import BoundsResult
from relulint.cli import main
from relulint.config import Config
from relulint.context import Context
from relulint.engine import analyse
from relulint.graph import build_graph
from relulint.loader import load_model
from relulint.modelkit import ModelBuilder
from relulint.units import find_layers

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SAMPLES = 10_000


# ---- helpers -----------------------------------------------------------------------------------
def bounds_of(model: onnx.ModelProto, ranges: dict, shapes: dict | None = None) -> tuple[Context, BoundsResult | None]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        onnx.save(model, path)
        loaded = load_model(path)
        graph = build_graph(loaded)
        config = Config(input_ranges=ranges, input_shapes=shapes or {})
        ctx = Context(loaded=loaded, graph=graph, layers=find_layers(graph), config=config)
        run_bounds_analysis(ctx)
    return ctx, ctx.analyses.bounds


def lint(model: onnx.ModelProto, folder: Path, ranges: dict, select=("RL6",)):
    path = folder / "model.onnx"
    onnx.save(model, path)
    return analyse(str(path), Config(select=select, probe=False, input_ranges=ranges))


def pre_activations(model: onnx.ModelProto, tensors: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the model in onnxruntime (float32, as deployed) and return the given intermediate tensors."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    for tensor in tensors:
        exposed.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def sample_box(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, count: int) -> np.ndarray:
    """Uniform samples of the box, the first eighth of them at its corners (where linear maps peak)."""
    shape = (count, *lo.shape[1:])
    samples = rng.uniform(lo, hi, size=shape)
    corners = count // 8
    pick = rng.integers(0, 2, size=(corners, *lo.shape[1:])).astype(bool)
    samples[:corners] = np.where(pick, np.broadcast_to(hi[0], pick.shape), np.broadcast_to(lo[0], pick.shape))
    return samples.astype(np.float32)


def gemm_relu_model(weight, bias, relu=True, input_name="x") -> onnx.ModelProto:
    b = ModelBuilder(seed=0)
    x = b.input(input_name, ["N", np.shape(weight)[1]])
    y = b.gemm(
        x,
        np.shape(weight)[1],
        np.shape(weight)[0],
        weight=np.asarray(weight, np.float32),
        bias=np.asarray(bias, np.float32),
        name="fc",
    )
    return b.build([b.relu(y, "act") if relu else y])


# ---- a case computed by hand -----------------------------------------------------------------
def hand_model() -> onnx.ModelProto:
    """x in [0, 1]^2. Layer 1: u0 = x0 + x1 - 0.5 in [-0.5, 1.5]; u1 = -x0 - 2 x1 - 0.1 in [-3.1, -0.1];
    u2 = x0 + x1 + 0.5 in [0.5, 2.5]. Layer 2: v0 = -h0 + 10 h1 - h2 - 0.05 with h1 = relu(u1) = 0, so
    v0 <= -0.05 + 0 - 0.5 = -0.55 (h0 >= 0, h2 >= 0.5); v1 = h0 + h2 in [0.5, 4]."""
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 2])
    w1 = np.array([[1, 1], [-1, -2], [1, 1]], np.float32)
    h = b.relu(b.gemm(x, 2, 3, weight=w1, bias=np.array([-0.5, -0.1, 0.5], np.float32), name="fc1"), "relu1")
    w2 = np.array([[-1, 10, -1], [1, 0, 1]], np.float32)
    v = b.relu(b.gemm(h, 3, 2, weight=w2, bias=np.array([-0.05, 0.0], np.float32), name="fc2"), "relu2")
    return b.build([v])


def test_hand_computed_bounds():
    _, result = bounds_of(hand_model(), {"x": ((0.0, 1.0),)})
    first, second = result.layers["relu1"], result.layers["relu2"]
    np.testing.assert_allclose(first.lower, [-0.5, -3.1, 0.5], atol=1e-5)
    np.testing.assert_allclose(first.upper, [1.5, -0.1, 2.5], atol=1e-5)
    assert first.dead.tolist() == [1]
    assert first.always_active.tolist() == [2]
    assert second.upper[0] == pytest.approx(-0.55, abs=1e-5)
    assert second.dead.tolist() == [0]
    assert second.always_active.tolist() == [1]
    # The bounds are widened for float32 rounding, never narrowed.
    assert first.upper[1] >= -0.1 and first.lower[2] <= 0.5


def test_rl601_and_rl602_report_the_hand_computed_units(tmp_path):
    result = lint(hand_model(), tmp_path, {"x": ((0.0, 1.0),)})
    by_rule = {(f.rule, f.node): f for f in result.findings}
    dead = by_rule[("RL601", "relu1")]
    assert str(dead.severity) == "error"
    assert dead.units.count == 1 and dead.units.total == 3 and dead.units.worst == (1,)
    assert dead.evidence["dead"][0]["upper_bound"] == pytest.approx(-0.1, abs=1e-5)
    assert "x ∈ [0, 1]" in dead.message
    assert by_rule[("RL601", "relu2")].evidence["dead"][0]["unit"] == 0
    active = by_rule[("RL602", "relu1")]
    assert str(active.severity) == "note" and active.units.worst == (2,)
    assert not active.evidence["whole_layer"]
    assert result.analyses.to_json()["bounds"]["layers"]["relu1"]["proven_dead"] == 1
    assert result.layers[0]["metrics"]["proven_dead"] == 1


def test_a_wider_domain_proves_less(tmp_path):
    # On [0, 2]^2, u1 = -x0 - 2 x1 - 0.1 still never exceeds -0.1, but v0 may now be positive? No:
    # h1 is still 0; what changes is that on [-1, 1]^2 u1 reaches 2.9, so nothing is proven dead.
    result = lint(hand_model(), tmp_path, {"x": ((-1.0, 1.0),)})
    assert not [f for f in result.findings if f.rule == "RL601" and f.node == "relu1"]


def test_symbolic_bounds_see_through_a_chain_of_linear_layers():
    """pre = (x) - (x) - 0.01 = -0.01: intervals lose the correlation ([-2.01, 1.99]), linear bounds do not."""
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 1])
    y = b.gemm(x, 1, 2, weight=np.array([[1.0], [1.0]], np.float32), name="split")
    z = b.gemm(y, 2, 1, weight=np.array([[1.0, -1.0]], np.float32), bias=np.array([-0.01], np.float32), name="diff")
    model = b.build([b.relu(z, "act")])
    _, result = bounds_of(model, {"x": ((-1.0, 1.0),)})
    layer = result.layers["act"]
    assert layer.symbolic and result.method == "interval+symbolic"
    assert layer.upper[0] == pytest.approx(-0.01, abs=1e-5)
    assert layer.dead.tolist() == [0]


def test_exact_bound_for_a_linear_op_on_the_input_box():
    rng = np.random.default_rng(3)
    weight, bias = rng.standard_normal((5, 4)), rng.standard_normal(5)
    lo, hi = np.array([-1.0, 0.0, 0.5, -2.0]), np.array([1.0, 0.5, 0.75, 3.0])
    ranges = {"x": tuple(zip(lo, hi))}
    # Per-channel ranges go along axis 1: for a [N, 4] input that is each feature.
    _, result = bounds_of(gemm_relu_model(weight, bias), ranges)
    expected_hi = bias + np.maximum(weight * lo, weight * hi).sum(axis=1)
    expected_lo = bias + np.minimum(weight * lo, weight * hi).sum(axis=1)
    layer = result.layers["act"]
    np.testing.assert_allclose(layer.upper, expected_hi, atol=1e-4)
    np.testing.assert_allclose(layer.lower, expected_lo, atol=1e-4)
    assert np.all(layer.upper >= expected_hi - 1e-12) and np.all(layer.lower <= expected_lo + 1e-12)


def test_healthy_model_has_no_unit_proven_dead(tmp_path):
    result = analyse(
        str(EXAMPLES / "healthy_convnet.onnx"),
        Config(select=("RL6",), probe=False, input_ranges={"image": ((-3.0, 3.0),)}),
    )
    assert result.error is None
    assert not [f for f in result.findings if f.rule == "RL601"]
    layers = result.analyses.to_json()["bounds"]["layers"]
    assert len(layers) == 5 and all(layer["proven_dead"] == 0 for layer in layers.values())


def test_dying_example_is_proven_dead_on_a_small_domain():
    config = Config(select=("RL601",), probe=False, input_ranges={"features": ((-0.3, 0.3),)})
    result = analyse(str(EXAMPLES / "dying_mlp.onnx"), config)
    assert [f.node for f in result.findings] == ["fc1_relu", "fc2_relu", "fc3_relu"]
    assert all(f.units.count == f.units.total == 128 for f in result.findings)


def test_without_a_domain_the_proof_rules_stay_silent_and_say_so(tmp_path):
    result = lint(hand_model(), tmp_path, {})
    assert not result.findings and "bounds" not in result.analyses.to_json()
    assert any("no --input-range given" in n.message for n in result.notes)
    # A default run (every rule, none asked for by name) does not repeat it for every model.
    quiet = lint(hand_model(), tmp_path, {}, select=("RL",))
    assert not any("--input-range" in n.message for n in quiet.notes)


def test_a_range_for_an_unknown_input_is_a_note(tmp_path):
    result = lint(hand_model(), tmp_path, {"image": ((0.0, 1.0),)})
    assert not result.findings
    assert any("'image', which is not an input of this model (inputs: x)" in n.message for n in result.notes)


def test_per_channel_ranges_must_match_the_channels(tmp_path):
    result = lint(hand_model(), tmp_path, {"x": ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0))})
    assert any("3 channel ranges but axis 1 has 2 channels" in n.message for n in result.notes)


def test_unmodelled_ops_make_outputs_unbounded_and_are_listed():
    # Cos is not modelled: its output is unbounded, so relu2 after it proves nothing, and a note says why.
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 2])
    h = b.relu(b.gemm(x, 2, 2, weight=np.eye(2, dtype=np.float32), bias=np.array([-5, 0], np.float32)), "relu1")
    c = b.node("Cos", [h])
    y = b.relu(b.gemm(c, 2, 2, weight=np.eye(2, dtype=np.float32), bias=np.array([-5, -5], np.float32)), "relu2")
    ctx, result = bounds_of(b.build([y]), {"x": ((0.0, 1.0),)})
    assert result.layers["relu1"].dead.tolist() == [0]
    assert result.layers["relu2"].dead.size == 0 and np.all(np.isinf(result.layers["relu2"].upper))
    assert result.unbounded_ops == {"Cos": 1}
    assert any("Cos ×1" in n.message for n in ctx.notes)


def test_nonnegative_input_and_nonpositive_weights_prove_death_after_an_unbounded_op():
    # relu(anything) >= 0; with weights <= 0 and a negative bias the next unit is dead whatever came before.
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 2])
    h = b.relu(b.node("Cos", [x]), "relu1")
    y = b.relu(b.gemm(h, 2, 1, weight=np.array([[-1.0, -2.0]], np.float32), bias=np.array([-0.1], np.float32)), "relu2")
    _, result = bounds_of(b.build([y]), {"x": ((0.0, 1.0),)})
    assert result.layers["relu2"].dead.tolist() == [0]
    assert result.layers["relu2"].upper[0] == pytest.approx(-0.1, abs=1e-5)


def test_clipped_relu_stuck_at_its_ceiling_is_reported(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 2])
    y = b.gemm(x, 2, 2, weight=np.eye(2, dtype=np.float32), bias=np.array([10.0, 0.0], np.float32), name="fc")
    six = b.const(np.array(6.0, np.float32))
    zero = b.const(np.array(0.0, np.float32))
    model = b.build([b.node("Clip", [y, zero, six], "relu6")])
    result = lint(model, tmp_path, {"x": ((0.0, 1.0),)})
    (finding,) = [f for f in result.findings if f.rule == "RL601"]
    assert finding.evidence["saturated"] == 1 and finding.evidence["ceiling"] == 6.0
    assert "ceiling 6" in finding.message


def test_leaky_units_below_zero_are_a_note(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 2])
    y = b.gemm(x, 2, 2, weight=np.eye(2, dtype=np.float32), bias=np.array([-5.0, 0.0], np.float32), name="fc")
    result = lint(b.build([b.leaky_relu(y, 0.1, "leaky")]), tmp_path, {"x": ((0.0, 1.0),)})
    (finding,) = [f for f in result.findings if f.rule == "RL601"]
    assert str(finding.severity) == "note" and "negative side of its LeakyRelu" in finding.message


def test_whole_layer_always_active_says_it_is_linear(tmp_path):
    model = gemm_relu_model(np.ones((3, 2)), np.full(3, 0.5))
    result = lint(model, tmp_path, {"x": ((0.0, 1.0),)})
    (finding,) = [f for f in result.findings if f.rule == "RL602"]
    assert finding.evidence["whole_layer"] and "the whole layer is linear" in finding.message
    quiet = analyse(
        str(tmp_path / "model.onnx"),
        Config(
            select=("RL602",),
            probe=False,
            input_ranges={"x": ((0.0, 1.0),)},
            rule_options={"RL602": {"min_fraction": 1.0}},
        ),
    )
    assert not quiet.findings


def test_cli_input_range_reaches_every_format(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(hand_model(), path)
    runner = CliRunner()
    text = runner.invoke(main, [str(path), "--no-probe", "--select", "RL6", "--input-range", "x=0,1"])
    assert text.exit_code == 1 and "RL601" in text.output and "RL602" in text.output
    report = runner.invoke(
        main, [str(path), "--no-probe", "--select", "RL6", "--input-range", "x=0,1", "--format", "json"]
    )
    data = json.loads(report.output)
    model = data["models"][0]
    assert {f["rule"] for f in model["findings"]} == {"RL601", "RL602"}
    assert model["bounds"]["domain"] == {"x": [[0.0, 1.0]]}
    assert model["bounds"]["layers"]["relu1"]["proven_dead"] == 1
    sarif = runner.invoke(
        main,
        [str(path), "--no-probe", "--select", "RL6", "--input-range", "x=0,1", "--format", "sarif"]
        + ["--sarif-root", str(tmp_path)],  # SARIF names models relative to a root that holds them
    )
    assert "RL601" in sarif.output


# ---- kernels against onnxruntime -------------------------------------------------------------
def _run_single(node: onnx.NodeProto, x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))]
    initializers = [numpy_helper.from_array(weight.astype(np.float32), "w")] if weight is not None else []
    graph = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"x": x.astype(np.float32)}
    )[0]


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]},
        {"kernel_shape": [3, 2], "pads": [0, 1, 1, 0], "strides": [2, 1], "dilations": [1, 2]},
        {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
        {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER"},
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": 2},
    ],
)
def test_conv_kernel_matches_onnxruntime(attrs):
    rng = np.random.default_rng(0)
    x, w = (
        rng.standard_normal((2, 4, 7, 6)),
        rng.standard_normal((6, 4 // attrs.get("group", 1), *attrs["kernel_shape"])),
    )
    expected = _run_single(helper.make_node("Conv", ["x", "w"], ["y"], **attrs), x, w)
    geometry = kernels.window(
        x.shape[2:],
        attrs["kernel_shape"],
        attrs.get("strides"),
        attrs.get("dilations"),
        attrs.get("pads"),
        attrs.get("auto_pad", "NOTSET"),
    )
    np.testing.assert_allclose(kernels.conv(x, w, geometry, attrs.get("group", 1)), expected, atol=1e-4)


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        {"kernel_shape": [2, 3], "strides": [1, 2], "dilations": [2, 1], "group": 2},
    ],
)
def test_conv_transpose_kernel_matches_onnxruntime(attrs):
    rng = np.random.default_rng(1)
    group = attrs.get("group", 1)
    x, w = rng.standard_normal((2, 4, 5, 4)), rng.standard_normal((4, 6 // group, *attrs["kernel_shape"]))
    expected = _run_single(helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs), x, w)
    n = 2
    pads = attrs.get("pads", [0] * 4)
    geometry = kernels.TransposeGeometry(
        tuple(attrs.get("strides", [1] * n)),
        tuple(attrs.get("dilations", [1] * n)),
        tuple(pads[:n]),
        tuple(pads[n:]),
        tuple(attrs.get("output_padding", [0] * n)),
    )
    np.testing.assert_allclose(kernels.conv_transpose(x, w, geometry, group), expected, atol=1e-4)


@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_pool_kernels_match_onnxruntime(ceil_mode, count_include_pad):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 6))
    attrs = {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": ceil_mode}
    geometry = kernels.window(
        x.shape[2:], attrs["kernel_shape"], attrs["strides"], None, attrs["pads"], "NOTSET", bool(ceil_mode)
    )
    expected_max = _run_single(helper.make_node("MaxPool", ["x"], ["y"], **attrs), x)
    np.testing.assert_allclose(kernels.max_pool(x, geometry), expected_max, atol=1e-5)
    expected_avg = _run_single(
        helper.make_node("AveragePool", ["x"], ["y"], count_include_pad=count_include_pad, **attrs), x
    )
    inside, with_pads = kernels.window_counts(x.shape[2:], geometry)
    average = kernels.window_sum(x, geometry) / (with_pads if count_include_pad else inside)
    np.testing.assert_allclose(average, expected_avg, atol=1e-5)


# ---- soundness on random small networks ------------------------------------------------------
@st.composite
def networks(draw):
    """A random small network (MLP or conv net) with a random input box; biases lean negative so that
    many units are provably dead and the property has something to check."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    b = ModelBuilder(seed=seed)
    conv = draw(st.booleans())
    shift = draw(st.floats(-3.0, 0.5))
    if conv:
        channels, size = draw(st.integers(1, 3)), draw(st.integers(3, 6))
        shape = [1, channels, size, size]
        y = b.input("x", ["N", channels, size, size])
        out = draw(st.integers(1, 4))
        k = draw(st.sampled_from([1, 2, 3]))
        bias = (rng.standard_normal(out) + shift).astype(np.float32)
        y = b.conv(y, channels, out, k=k, stride=draw(st.integers(1, 2)), bias=bias, name="conv1")
        if draw(st.booleans()):
            y = b.batchnorm(y, out, gamma=rng.uniform(0.2, 2.0, out), beta=rng.standard_normal(out) + shift, name="bn1")
        y = _activation(b, draw, y, "act1")
        pool = draw(st.sampled_from(["MaxPool", "AveragePool", "none"]))
        if pool != "none":
            y = b.node(pool, [y], "pool", kernel_shape=[2, 2], pads=[0, 0, 1, 1])
        y = b.global_pool_flatten(y)
        width = out
    else:
        width = draw(st.integers(1, 6))
        shape = [1, width]
        y = b.input("x", ["N", width])
    for index in range(draw(st.integers(1, 3))):
        units = draw(st.integers(1, 8))
        w = b.he([units, width], width, draw(st.floats(0.3, 3.0)))
        bias = (rng.standard_normal(units) + shift).astype(np.float32)
        if draw(st.booleans()):
            y = b.gemm(y, width, units, weight=w, bias=bias, trans_b=draw(st.booleans()), name=f"fc{index}")
        else:
            y = b.linear(y, width, units, weight=w, bias=bias, name=f"fc{index}")
        y = _activation(b, draw, y, f"fc{index}_act")
        width = units
    lo = draw(st.floats(-2.0, 1.0))
    hi = lo + draw(st.floats(0.0, 2.0))
    return b.build([y]), {"x": ((lo, hi),)}, shape


def _activation(b: ModelBuilder, draw, y: str, name: str) -> str:
    kind = draw(st.sampled_from(["Relu", "Relu", "LeakyRelu", "Clip", "Max"]))
    if kind == "Relu":
        return b.relu(y, name)
    if kind == "LeakyRelu":
        return b.leaky_relu(y, draw(st.floats(0.0, 0.5)), name)
    zero = b.const(np.array(0.0, np.float32))
    if kind == "Max":
        return b.node("Max", [y, zero], name)
    return b.node("Clip", [y, zero, b.const(np.array(draw(st.floats(0.5, 6.0)), np.float32))], name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_every_unit_proven_dead_is_dead_on_10000_inputs_from_the_domain(case):
    model, ranges, shape = case
    ctx, result = bounds_of(model, ranges)
    lo, hi = ranges["x"][0]
    rng = np.random.default_rng(0)
    samples = sample_box(rng, np.full(shape, lo), np.full(shape, hi), SAMPLES)
    layers = [layer for layer in ctx.layers if layer.name in result.layers]
    assert layers, "every generated layer is bounded"
    values = pre_activations(model, [layer.pre_activation for layer in layers], {"x": samples})
    for layer, value in zip(layers, values):
        bounds = result.layers[layer.name]
        axis = layer.channel_axis % value.ndim
        per_unit = np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1)
        # Every unit the proof calls dead is dead on every sample ...
        assert np.all(per_unit[bounds.dead] <= bounds.threshold), f"{layer.name}: a unit proven dead fired"
        assert np.all(per_unit[bounds.always_active] >= 0), f"{layer.name}: a unit proven active was off"
        # ... because every sampled pre-activation lies inside its unit's bounds.
        assert np.all(per_unit.min(axis=1) >= bounds.lower) and np.all(per_unit.max(axis=1) <= bounds.upper)


# ---- every modelled op, one at a time --------------------------------------------------------
def _c(b: ModelBuilder, value) -> str:
    return b.const(np.asarray(value, np.float32))


def _i(b: ModelBuilder, value) -> str:
    return b.const(np.asarray(value, np.int64))


# Each builds one op (or a short chain) on y, the [N, 3, 4, 4] output of a random convolution.
OP_CASES = {
    "ConvTranspose": lambda b, y: b.node(
        "ConvTranspose", [y, _c(b, b.rng.standard_normal((3, 2, 2, 2)))], strides=[2, 2]
    ),
    "MatMul": lambda b, y: b.node("MatMul", [y, _c(b, b.rng.standard_normal((4, 5)))]),
    "MatMul-left": lambda b, y: b.node("MatMul", [_c(b, b.rng.standard_normal((2, 4))), y]),
    "Gemm": lambda b, y: b.node("Gemm", [b.node("Flatten", [y]), _c(b, b.rng.standard_normal((5, 48)))], transB=1),
    "Add": lambda b, y: b.node("Add", [y, _c(b, [[[0.5]], [[-1.0]], [[2.0]]])]),
    "Sub": lambda b, y: b.node("Sub", [_c(b, 1.5), y]),
    "Mul": lambda b, y: b.node("Mul", [y, _c(b, [[[0.5]], [[-2.0]], [[0.0]]])]),
    "Div": lambda b, y: b.node("Div", [y, _c(b, [[[4.0]], [[-0.5]], [[3.0]]])]),
    "Neg": lambda b, y: b.node("Neg", [y]),
    "BatchNormalization": lambda b, y: b.batchnorm(y, 3, gamma=[1.5, -0.5, 2.0], beta=[0.1, -1.0, 0.0]),
    "LeakyRelu": lambda b, y: b.leaky_relu(y, 0.2),
    "LeakyRelu-negative": lambda b, y: b.leaky_relu(y, -0.5),
    "PRelu": lambda b, y: b.node("PRelu", [y, _c(b, [[[0.25]], [[-0.5]], [[1.5]]])]),
    "Elu": lambda b, y: b.node("Elu", [y], alpha=0.7),
    "Selu": lambda b, y: b.node("Selu", [y]),
    "Celu": lambda b, y: b.node("Celu", [y], alpha=2.0),
    "Gelu": lambda b, y: b.node("Gelu", [y]),
    "Gelu-tanh": lambda b, y: b.node("Gelu", [y], approximate="tanh"),
    "Mish": lambda b, y: b.node("Mish", [y]),
    "HardSwish": lambda b, y: b.node("HardSwish", [y]),
    "HardSigmoid": lambda b, y: b.node("HardSigmoid", [y], alpha=0.3, beta=0.4),
    "Softplus": lambda b, y: b.node("Softplus", [y]),
    "Softsign": lambda b, y: b.node("Softsign", [y]),
    "ThresholdedRelu": lambda b, y: b.node("ThresholdedRelu", [y], alpha=0.5),
    "Clip": lambda b, y: b.node("Clip", [y, _c(b, -1.0), _c(b, 2.0)]),
    "Sigmoid": lambda b, y: b.node("Sigmoid", [y]),
    "Tanh": lambda b, y: b.node("Tanh", [y]),
    "Abs": lambda b, y: b.node("Abs", [y]),
    "Exp": lambda b, y: b.node("Exp", [b.node("Mul", [y, _c(b, 0.1)])]),
    "Sqrt": lambda b, y: b.node("Sqrt", [b.relu(y)]),
    "Softmax": lambda b, y: b.node("Softmax", [y], axis=1),
    "MaxPool": lambda b, y: b.node("MaxPool", [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
    "AveragePool": lambda b, y: b.node("AveragePool", [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    "AveragePool-pads": lambda b, y: b.node(
        "AveragePool", [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1
    ),
    "GlobalAveragePool": lambda b, y: b.node("GlobalAveragePool", [y]),
    "GlobalMaxPool": lambda b, y: b.node("GlobalMaxPool", [y]),
    "ReduceMean": lambda b, y: b.node("ReduceMean", [y, _i(b, [2, 3])]),
    "ReduceSum": lambda b, y: b.node("ReduceSum", [y, _i(b, [1])], keepdims=0),
    "ReduceMax": lambda b, y: b.node("ReduceMax", [y, _i(b, [-1])]),
    "Flatten": lambda b, y: b.node("Flatten", [y]),
    "Reshape": lambda b, y: b.node("Reshape", [y, _i(b, [-1, 6, 8])]),
    "Reshape-from-Shape": lambda b, y: b.node(
        "Reshape",
        [y, b.node("Concat", [b.node("Slice", [b.node("Shape", [y]), _i(b, [0]), _i(b, [1])]), _i(b, [-1])], axis=0)],
    ),
    "Transpose": lambda b, y: b.node("Transpose", [y], perm=[0, 2, 3, 1]),
    "Concat": lambda b, y: b.node("Concat", [y, b.node("Mul", [y, _c(b, -2.0)])], axis=1),
    "Slice": lambda b, y: b.node("Slice", [y, _i(b, [1, 0]), _i(b, [3, 4]), _i(b, [1, 3]), _i(b, [1, 2])]),
    "Pad": lambda b, y: b.node("Pad", [y, _i(b, [0, 0, 1, 2, 0, 0, 2, 1]), _c(b, 0.5)]),
    "Pad-reflect": lambda b, y: b.node("Pad", [y, _i(b, [0, 0, 1, 1, 0, 0, 1, 1])], mode="reflect"),
    "Split": lambda b, y: b.node("Split", [y], outputs=2, axis=2, num_outputs=2),
    "Squeeze-Unsqueeze": lambda b, y: b.node("Squeeze", [b.node("Unsqueeze", [y, _i(b, [2])]), _i(b, [2])]),
    "Gather": lambda b, y: b.node("Gather", [y, _i(b, [2, 0, 2])], axis=1),
    "Tile": lambda b, y: b.node("Tile", [y, _i(b, [1, 2, 1, 1])]),
    "Expand": lambda b, y: b.node("Expand", [b.node("ReduceMean", [y, _i(b, [1])]), _i(b, [1, 3, 4, 4])]),
    "Add-computed": lambda b, y: b.node("Add", [y, b.node("Sigmoid", [y])]),
    "Sub-computed": lambda b, y: b.node("Sub", [y, b.node("Transpose", [y], perm=[0, 1, 3, 2])]),
    "Mul-computed": lambda b, y: b.node("Mul", [y, b.node("Tanh", [y])]),
    "Div-computed": lambda b, y: b.node("Div", [y, b.node("Add", [b.node("Sigmoid", [y]), _c(b, 1.0)])]),
    "Max-computed": lambda b, y: b.node("Max", [y, b.node("Neg", [y])]),
    "Min-computed": lambda b, y: b.node("Min", [y, _c(b, 0.3)]),
    "Sum": lambda b, y: b.node("Sum", [y, y, b.node("Abs", [y])]),
    "Dropout": lambda b, y: b.node("Dropout", [y]),
    "Cast": lambda b, y: b.node("Cast", [y], to=TensorProto.FLOAT),
    "LayerNormalization": lambda b, y: b.node(
        "LayerNormalization", [y, _c(b, [1.0, -2.0, 0.5, 1.0]), _c(b, [0.0, 1.0, -1.0, 0.2])]
    ),
    "InstanceNormalization": lambda b, y: b.node(
        "InstanceNormalization", [y, _c(b, [1.0, 2.0, -1.0]), _c(b, [0.5, 0.0, 0.0])]
    ),
}


@pytest.mark.parametrize("op", sorted(OP_CASES))
def test_each_modelled_op_bounds_every_sampled_value(op):
    """The op's output, and the ReLU layer after it, stay inside their bounds on 10,000 samples of the box."""
    from relulint.bounds.propagate import input_box, propagate_bounds

    b = ModelBuilder(seed=7, opset=20)
    x = b.input("x", ["N", 2, 4, 4])
    y = b.conv(x, 2, 3, k=3, bias=b.rng.standard_normal(3).astype(np.float32), name="conv")
    out = OP_CASES[op](b, y)
    model = b.build([out])
    ranges = {"x": ((-1.0, 0.5), (0.0, 2.0))}  # per channel
    loaded_path = Path(tempfile.mkdtemp()) / "model.onnx"
    onnx.save(model, loaded_path)
    graph = build_graph(load_model(loaded_path))
    propagation = propagate_bounds(graph, input_box(graph, {}, ranges), opset=20)
    tensors = [  # every computed float tensor (exact ones, such as shapes, are known values)
        t
        for node in graph.nodes.values()
        for t in node.outputs
        if t in propagation.bounds and propagation.bounds[t].value is None
    ]
    assert out in propagation.bounds, f"{op} left its output unbounded: {propagation.reasons}"
    assert np.all(np.isfinite(propagation.bounds[out].hi)), f"{op} gave no finite bound"
    rng = np.random.default_rng(0)
    lo = np.array([-1.0, 0.0]).reshape(1, 2, 1, 1) * np.ones((1, 2, 4, 4))
    hi = np.array([0.5, 2.0]).reshape(1, 2, 1, 1) * np.ones((1, 2, 4, 4))
    samples = sample_box(rng, lo, hi, SAMPLES)
    values = pre_activations(model, tensors, {"x": samples})
    for tensor, value in zip(tensors, values):
        bound = propagation.bounds[tensor]
        assert value.shape[1:] == bound.shape[1:], f"{tensor}: shape {value.shape} vs bound {bound.shape}"
        assert np.all(value.min(axis=0) >= bound.lo[0]), f"{op}: {tensor} went below its lower bound"
        assert np.all(value.max(axis=0) <= bound.hi[0]), f"{op}: {tensor} went above its upper bound"


# ---- hostile models: the bounds give up soundly, never crash or warn --------------------------
def test_an_input_too_large_to_bound_is_a_note(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("x", [1, 10**12])
    model = b.build([b.relu(x, "act")], output_shapes=[[1, 10**12]])
    result = lint(model, tmp_path, {"x": ((0.0, 1.0),)})
    assert result.error is None and not result.findings
    assert any("too large to bound" in n.message for n in result.notes)


def test_malformed_and_huge_ops_are_left_unbounded():
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 2, 4, 4])
    padded = b.node("Pad", [x, _i(b, [0, 0, 10**6, 10**6, 0, 0, 10**6, 10**6])])  # 4e12 elements
    pooled = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[0, 0])  # a zero stride
    y = b.relu(
        b.node("Add", [b.node("ReduceMax", [padded, _i(b, [2, 3])]), b.node("ReduceMax", [pooled, _i(b, [2, 3])])]),
        "act",
    )
    graph_model = b.build([y], output_shapes=[[1, 2, 1, 1]])
    _, result = bounds_of(graph_model, {"x": ((0.0, 1.0),)})
    assert set(result.unbounded_ops) >= {"Pad", "MaxPool"}
    # Shape inference cannot size the padded tensor either, so the layer after it has no bound at all.
    assert "act" not in result.layers


def test_nan_weights_give_unbounded_layers_without_warnings(recwarn):
    weight = np.array([[np.nan, 1.0], [1.0, 1.0]])
    _, result = bounds_of(gemm_relu_model(weight, np.array([-5.0, -5.0])), {"x": ((0.0, 1.0),)})
    layer = result.layers["act"]
    assert np.isinf(layer.upper[0]) and layer.dead.tolist() == [1]  # the finite row is still proven dead
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
