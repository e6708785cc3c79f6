"""The bias rules RL201 and RL202, the static margin analysis behind them, and the examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from relulint.cli import main
from relulint.config import Config
from relulint.engine import analyse
from relulint.findings import Severity
from relulint.margins.gaussian import SCALAR_UNITS, active_rate, rectified_moments
from relulint.margins.model import margins_of
from relulint.modelkit import ModelBuilder, mlp

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def lint(tmp_path, model, select=("RL1", "RL2"), **config):
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    return analyse(str(path), Config(probe=False, select=select, **config))


def findings(result, rule):
    assert result.error is None, result.error
    return [f for f in result.findings if f.rule == rule]


def metrics(result, layer):
    return next(record["metrics"] for record in result.layers if record["name"] == layer)


def margin_model(biases, units: int | None = None, activation: str = "Relu"):
    """input [n, U] -> Gemm with identity weights (every row norm is 1) and the given biases -> ReLU.

    At a graph input sigma_in = 1, so each unit's margin is exactly its bias.
    """
    biases = np.asarray(biases, np.float32)
    units = units or biases.size
    b = ModelBuilder(seed=0)
    x = b.input("x", ["n", units])
    y = b.gemm(x, units, units, weight=np.eye(units, dtype=np.float32), bias=biases, name="fc1")
    y = b.relu(y, "fc1_relu") if activation == "Relu" else b.leaky_relu(y, 0.01, "fc1_relu")
    return b.build([b.gemm(y, units, 2, name="head")])


def with_at_risk(count: int, units: int = 20, bias: float = -5.0) -> np.ndarray:
    biases = np.zeros(units, np.float32)
    biases[:count] = bias
    return biases


# ---- RL201 large negative bias ----------------------------------------------------------------------
def test_rl201_silent_on_zero_biases(tmp_path):
    result = lint(tmp_path, margin_model(np.zeros(20)))
    assert findings(result, "RL201") == []
    assert metrics(result, "fc1_relu")["at_risk"] == 0
    assert metrics(result, "fc1_relu")["bias_margin_min"] == 0.0


def test_rl201_fires_with_counts_worst_units_and_scale(tmp_path):
    biases = with_at_risk(12)
    biases[7] = -9.0
    result = lint(tmp_path, margin_model(biases))
    [finding] = findings(result, "RL201")
    assert finding.severity == Severity.ERROR
    assert finding.node == "fc1_relu" and finding.tensor is not None
    assert (finding.units.count, finding.units.total) == (12, 20)
    assert finding.units.worst[0] == 7
    evidence = finding.evidence
    assert evidence["input_scale"] == 1.0 and evidence["input_scale_source"] == "graph input"
    assert evidence["margin_min"] == pytest.approx(-9.0, rel=1e-6)
    assert evidence["worst"][0] == pytest.approx(
        {"unit": 7, "margin": -9.0, "bias": -9.0, "weight_norm": 1.0, "active_rate": active_rate(-9.0)}
    )
    assert "12 of 20 units (60%)" in finding.message and "unit 7 (margin -9" in finding.message
    m = metrics(result, "fc1_relu")
    assert m["at_risk"] == 12 and m["at_risk_fraction"] == pytest.approx(0.6)
    assert m["input_scale"] == 1.0 and m["bias_margin_min"] == pytest.approx(-9.0)


@pytest.mark.parametrize(("bias", "fires"), [(-3.01, True), (-2.99, False)])
def test_rl201_edge_of_k(tmp_path, bias, fires):
    assert bool(findings(lint(tmp_path, margin_model(with_at_risk(10, bias=bias))), "RL201")) == fires


@pytest.mark.parametrize(
    ("count", "severity"),
    [(1, Severity.NOTE), (2, Severity.WARNING), (8, Severity.WARNING), (9, Severity.ERROR)],
)
def test_rl201_severity_edges_at_5_and_40_percent(tmp_path, count, severity):
    [finding] = findings(lint(tmp_path, margin_model(with_at_risk(count))), "RL201")
    assert finding.severity == severity


def test_rl201_k_and_input_scale_are_options(tmp_path):
    model = margin_model(with_at_risk(10, bias=-2.5))
    assert findings(lint(tmp_path, model), "RL201") == []
    judged = lint(tmp_path, model, rule_options={"RL201": {"k": 2.0}})
    assert len(findings(judged, "RL201")) == 1
    # the at_risk metrics count by the margins analysis's own k, which the rule's does not move
    assert metrics(judged, "fc1_relu")["at_risk"] == 0
    counted = lint(tmp_path, model, analysis_options={"margins": {"k": 2.0}})
    assert metrics(counted, "fc1_relu")["at_risk"] == 10 and findings(counted, "RL201") == []
    model = margin_model(with_at_risk(10, bias=-5.0))
    quiet = lint(tmp_path, model, rule_options={"RL201": {"input_scale": 2.0}})  # margins halve to -2.5
    assert findings(quiet, "RL201") == []
    assert metrics(quiet, "fc1_relu")["input_scale"] == 2.0
    # the margins analysis's own table sets it too, and wins over the rule's key it replaces
    own = lint(
        tmp_path,
        model,
        analysis_options={"margins": {"input_scale": 2.0}},
        rule_options={"RL201": {"input_scale": 0.5}},
    )
    assert findings(own, "RL201") == [] and metrics(own, "fc1_relu")["input_scale"] == 2.0


def test_rl201_leaky_units_are_weak_not_dead(tmp_path):
    [finding] = findings(lint(tmp_path, margin_model(with_at_risk(15), activation="LeakyRelu")), "RL201")
    assert finding.severity == Severity.NOTE


def test_rl201_leaves_normalized_layers_to_rl202(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("x", ["n", 16])
    y = b.gemm(x, 16, 16, bias=np.full(16, -50.0, np.float32), name="fc1")  # BN removes this bias
    y = b.relu(b.batchnorm(y, 16, name="bn1"), "fc1_relu")
    result = lint(tmp_path, b.build([b.gemm(y, 16, 2, name="head")]))
    assert result.findings == []


def test_dying_mlp_example_gets_rl201_errors():
    result = analyse(str(EXAMPLES / "dying_mlp.onnx"), Config(probe=False, select=("RL1", "RL2")))
    errors = [f for f in findings(result, "RL201") if f.severity == Severity.ERROR]
    assert {f.node for f in errors} == {"fc2_relu", "fc3_relu"}
    # fc1 sees unit-scale inputs: margins about -4 / 1.41 = -2.8, so only its smaller-norm units are at risk.
    [first] = [f for f in findings(result, "RL201") if f.node == "fc1_relu"]
    assert first.severity == Severity.WARNING and 0.05 < first.units.fraction < 0.4
    # fc2's input is fc1's nearly silent output: its scale is propagated, not assumed.
    [second] = [f for f in errors if f.node == "fc2_relu"]
    assert second.evidence["input_scale"] < 0.1 and "fc1_relu" in second.evidence["input_scale_source"]
    assert "fix that layer first" in second.message
    assert {f.rule for f in result.findings} == {"RL201"}


def test_healthy_convnet_example_is_silent():
    result = analyse(str(EXAMPLES / "healthy_convnet.onnx"), Config(probe=False, select=("RL1", "RL2")))
    assert result.error is None
    assert [f for f in result.findings if f.severity >= Severity.WARNING] == []


def test_cli_json_reports_rl201_and_the_margin_metrics():
    result = CliRunner().invoke(main, [str(EXAMPLES / "dying_mlp.onnx"), "--no-probe", "--format", "json"])
    assert result.exit_code == 1, result.output
    model = json.loads(result.output)["models"][0]
    rl201 = [f for f in model["findings"] if f["rule"] == "RL201"]
    assert [f["severity"] for f in rl201] == ["warning", "error", "error"]
    assert rl201[1]["units"]["count"] == rl201[1]["units"]["total"] == 128
    for unit in model["units"]:
        assert {"input_scale", "bias_margin_min", "at_risk", "at_risk_fraction"} <= set(unit["metrics"])
    assert model["units"][0]["metrics"]["input_scale"] == 1.0


# ---- sigma_in propagation -------------------------------------------------------------------------
def measured_rms(model: onnx.ModelProto, tensors: list[str], x: np.ndarray) -> list[float]:
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in tensors:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(tensors, {session.get_inputs()[0].name: x})
    return [float(np.sqrt(np.mean(np.square(o)))) for o in outputs]


@pytest.mark.parametrize("bias", [0.0, -0.5])
def test_propagated_input_scale_matches_onnxruntime(tmp_path, bias):
    b = ModelBuilder(seed=3)
    y = mlp(b, b.input("x", ["n", 64]), [64, 128, 128, 128, 10], bias_value=bias)
    model = b.build([y])
    result = lint(tmp_path, model)
    x = np.random.default_rng(0).standard_normal((4000, 64)).astype(np.float32)
    measured = measured_rms(model, ["fc1_relu_out", "fc2_relu_out"], x)
    estimated = [metrics(result, "fc2_relu")["input_scale"], metrics(result, "fc3_relu")["input_scale"]]
    assert estimated == pytest.approx(measured, rel=0.1)


def test_rectified_moments_match_numerical_integration():
    grid = np.linspace(-40.0, 40.0, 800_001)
    for mean, std, slope in [(0.0, 1.0, 0.0), (-2.0, 0.5, 0.0), (1.0, 2.0, 0.1), (-1.0, 1.0, 0.25), (-12.0, 1.0, 0.0)]:
        density = np.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
        f = np.where(grid > 0, grid, slope * grid)
        first, second = rectified_moments(np.array([mean]), np.array([std]), slope)
        assert first[0] == pytest.approx(np.trapezoid(f * density, grid), rel=1e-4, abs=1e-30)
        assert second[0] == pytest.approx(np.trapezoid(f * f * density, grid), rel=1e-4, abs=1e-30)
    # no spread: the activation of the mean itself
    assert rectified_moments(np.array([-1.0, 2.0]), np.zeros(2))[1].tolist() == [0.0, 4.0]


def test_small_layers_moments_and_margins_equal_numpys_bit_for_bit():
    """Layers of up to SCALAR_UNITS units are computed on Python floats: the same numbers as numpy's path,
    which a layer one unit wider takes (the units' results do not depend on their neighbours)."""
    rng = np.random.default_rng(0)
    padding = np.ones(SCALAR_UNITS + 1)
    for trial in range(300):
        units = int(rng.integers(1, SCALAR_UNITS + 1))
        mean = rng.standard_normal(units) * 10.0 ** rng.uniform(-3, 3)
        std = np.abs(rng.standard_normal(units)) * 10.0 ** rng.uniform(-3, 3)
        std[rng.random(units) < 0.2] = [0.0, -1.0, 1e-300][trial % 3]  # no spread; mean / std overflows
        if trial % 7 == 0:
            mean[0] = [np.nan, np.inf, 1e200][trial % 3]  # not finite or huge: numpy's path for this layer too
        slope = [0.0, 0.01, 0.2][trial % 3]
        wide_mean, wide_std = np.concatenate([mean, padding]), np.concatenate([std, padding])
        with np.errstate(over="ignore", invalid="ignore"):
            wide = rectified_moments(wide_mean, wide_std, slope)
            wide_margins = margins_of(wide_mean, wide_std)
            small = rectified_moments(mean, std, slope)
            small_margins = margins_of(mean, std)
        for got, expected in [(small[0], wide[0]), (small[1], wide[1]), (small_margins, wide_margins)]:
            assert got.dtype == np.float64
            np.testing.assert_array_equal(got, expected[:units])


def test_scale_propagates_through_pooling_and_flatten(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("image", ["n", 3, 8, 8])
    y = b.relu(b.conv(x, 3, 8, name="conv1"), "conv1_relu")
    y = b.global_pool_flatten(y)
    y = b.relu(b.gemm(y, 8, 16, bias=np.full(16, -6.0, np.float32), name="fc1"), "fc1_relu")
    result = lint(tmp_path, b.build([b.gemm(y, 16, 2, name="head")]))
    [finding] = findings(result, "RL201")
    assert finding.node == "fc1_relu"
    assert "conv1_relu" in finding.evidence["input_scale_source"]
    assert finding.evidence["input_scale_fallback"] is False


def test_unmodelled_op_falls_back_to_unit_scale_and_says_so(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.node("Sigmoid", [b.input("x", ["n", 16])], "squash")
    y = b.relu(b.gemm(x, 16, 16, bias=np.full(16, -8.0, np.float32), name="fc1"), "fc1_relu")
    result = lint(tmp_path, b.build([b.gemm(y, 16, 2, name="head")]))
    [finding] = findings(result, "RL201")
    assert finding.evidence["input_scale"] == 1.0 and finding.evidence["input_scale_fallback"] is True
    assert "Sigmoid node 'squash'" in finding.evidence["input_scale_source"]
    # Every unit is at risk, but on an assumed scale: a warning, not an error.
    assert finding.evidence["fraction"] == 1.0 and finding.severity == Severity.WARNING


@pytest.mark.parametrize(("activation", "severity"), [("Relu", Severity.ERROR), ("HardSwish", Severity.NOTE)])
def test_rl201_on_a_variant_that_keeps_a_gradient_below_zero_is_a_note(tmp_path, activation, severity):
    # Hard-swish passes a gradient on (-3, 0): a unit there is weak, not dead (PP-OCRv5 has such layers).
    b = ModelBuilder(seed=0)
    y = b.gemm(b.input("x", ["n", 16]), 16, 16, bias=np.full(16, -8.0, np.float32), name="fc1")
    y = b.node(activation, [y], "fc1_act")
    [finding] = findings(lint(tmp_path, b.build([b.gemm(y, 16, 2, name="head")])), "RL201")
    assert finding.evidence["fraction"] == 1.0 and finding.severity == severity


def test_residual_shortcut_keeps_units_alive(tmp_path):
    """relu(W x + b + s) with s the output of an earlier ReLU: the shortcut's mean and spread count."""

    def model(with_shortcut: bool):
        b = ModelBuilder(seed=0)
        x = b.input("x", ["n", 16])
        s = b.relu(b.gemm(x, 16, 16, name="fc0"), "fc0_relu")
        weight, bias = np.eye(16, dtype=np.float32) * 0.01, np.full(16, -0.5, np.float32)
        y = b.gemm(s, 16, 16, weight=weight, bias=bias, name="fc1")
        if with_shortcut:
            y = b.add(y, s, "join")
        y = b.relu(y, "fc1_relu")
        return b.build([b.gemm(y, 16, 2, name="head")])

    plain = findings(lint(tmp_path, model(False)), "RL201")
    assert [f.node for f in plain] == ["fc1_relu"]
    joined = lint(tmp_path, model(True))
    assert findings(joined, "RL201") == []
    assert metrics(joined, "fc1_relu")["bias_margin_min"] > -3


# ---- a trained model stays silent ---------------------------------------------------------------------
def sklearn_mlp_to_onnx(clf, features: int) -> onnx.ModelProto:
    nodes, initializers, x = [], [], "x"
    layers = list(zip(clf.coefs_, clf.intercepts_))
    for index, (coef, intercept) in enumerate(layers):
        initializers += [
            numpy_helper.from_array(coef.astype(np.float32), f"W{index}"),  # [fan_in, units]: Gemm, transB=0
            numpy_helper.from_array(intercept.astype(np.float32), f"b{index}"),
        ]
        nodes.append(helper.make_node("Gemm", [x, f"W{index}", f"b{index}"], [f"h{index}"], name=f"fc{index}"))
        x = f"h{index}"
        if index < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"r{index}"], name=f"relu{index}"))
            x = f"r{index}"
    graph = helper.make_graph(
        nodes,
        "sklearn_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", features])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", clf.coefs_[-1].shape[1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_trained_sklearn_mlp_stays_silent(tmp_path):
    from sklearn.datasets import make_classification
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    x, y = make_classification(n_samples=600, n_features=20, n_informative=10, n_classes=3, random_state=0)
    x = StandardScaler().fit_transform(x)  # unit-scale inputs, as RL201 assumes at a graph input
    clf = MLPClassifier(hidden_layer_sizes=(64, 64, 32), activation="relu", max_iter=300, tol=0.0, random_state=0)
    # tol=0: all 300 iterations run; one BLAS thread: tiny matrices, and parallel test runs share the cores
    with pytest.warns(ConvergenceWarning), threadpool_limits(1):
        clf.fit(x, y)
    assert clf.n_iter_ == 300 and clf.score(x, y) > 0.9
    result = lint(tmp_path, sklearn_mlp_to_onnx(clf, 20))
    loud = [f for f in result.findings if f.rule in ("RL101", "RL201") and f.severity >= Severity.WARNING]
    assert loud == []
    assert [record["metrics"]["at_risk_fraction"] for record in result.layers] == [0.0, 0.0, 0.0]


# ---- RL202 normalization that switches units off -------------------------------------------------------
def bn_model(gamma, beta, shift: float | None = None, residual: bool = False, units: int | None = None):
    """input -> Gemm -> BatchNorm(gamma, beta) [-> Add shift] [+ shortcut from an earlier ReLU] -> ReLU."""
    gamma = np.asarray(gamma, np.float32)
    beta = np.asarray(beta, np.float32)
    units = units or gamma.size
    b = ModelBuilder(seed=0)
    x = b.input("x", ["n", units])
    if residual:
        x = b.relu(b.batchnorm(b.gemm(x, units, units, name="fc0"), units, name="bn0"), "fc0_relu")
    y = b.batchnorm(b.gemm(x, units, units, name="fc1"), units, gamma=gamma, beta=beta, name="bn1")
    if shift is not None:
        y = b.node("Add", [y, b.const(np.full(units, shift, np.float32))], "shift")
    if residual:
        y = b.add(y, x, "join")
    y = b.relu(y, "fc1_relu")
    return b.build([b.gemm(y, units, 2, name="head")])


def test_rl202_silent_on_default_batchnorm(tmp_path):
    assert findings(lint(tmp_path, bn_model(np.ones(16), np.zeros(16))), "RL202") == []


def test_rl202_fires_on_negative_beta_over_gamma(tmp_path):
    gamma, beta = np.ones(16), np.zeros(16)
    gamma[:10], beta[:10] = 0.5, -2.0  # beta/|gamma| = -4
    beta[3] = -3.0
    result = lint(tmp_path, bn_model(gamma, beta))
    [finding] = findings(result, "RL202")
    assert finding.severity == Severity.ERROR
    assert finding.node == "fc1_relu" and finding.evidence["norm"] == "bn1"
    assert (finding.units.count, finding.units.total) == (10, 16) and finding.units.worst[0] == 3
    assert finding.evidence["worst"][0]["margin"] == pytest.approx(-6.0)
    assert "BatchNormalization 'bn1'" in finding.message and "beta -3, gamma 0.5" in finding.message
    assert findings(result, "RL201") == []
    assert metrics(result, "fc1_relu")["at_risk"] == 10


@pytest.mark.parametrize(("ratio", "fires"), [(-3.01, True), (-2.99, False)])
def test_rl202_edge_of_k(tmp_path, ratio, fires):
    beta = np.zeros(20)
    beta[:10] = ratio * 0.5
    assert bool(findings(lint(tmp_path, bn_model(np.full(20, 0.5), beta)), "RL202")) == fires


@pytest.mark.parametrize(
    ("count", "severity"),
    [(1, Severity.NOTE), (2, Severity.WARNING), (8, Severity.WARNING), (9, Severity.ERROR)],
)
def test_rl202_severity_edges(tmp_path, count, severity):
    beta = np.zeros(20)
    beta[:count] = -5.0
    [finding] = findings(lint(tmp_path, bn_model(np.ones(20), beta)), "RL202")
    assert finding.severity == severity


@pytest.mark.parametrize(
    ("gamma", "beta", "fires"),
    [(0.9e-3, 0.0, True), (1.1e-3, 0.0, False), (0.0, 0.1, False), (0.0, 0.0, True)],
)
def test_rl202_gamma_about_zero(tmp_path, gamma, beta, fires):
    gammas, betas = np.ones(16), np.zeros(16)
    gammas[:8], betas[:8] = gamma, beta
    found = findings(lint(tmp_path, bn_model(gammas, betas)), "RL202")
    assert bool(found) == fires
    if fires:
        assert found[0].units.count == 8 and found[0].evidence["gamma_about_zero"] == 8


def test_rl202_counts_a_constant_shift_after_the_norm(tmp_path):
    [finding] = findings(lint(tmp_path, bn_model(np.ones(16), np.zeros(16), shift=-4.0)), "RL202")
    assert finding.units.count == 16


def test_rl202_residual_shortcut_is_counted(tmp_path):
    beta = np.full(16, -3.5)
    assert len(findings(lint(tmp_path, bn_model(np.ones(16), beta)), "RL202")) == 1
    # relu(bn) + relu output on the shortcut: mean 0.4, variance 0.34 -> margin (-3.5 + 0.4) / 1.16 = -2.7
    result = lint(tmp_path, bn_model(np.ones(16), beta, residual=True))
    assert findings(result, "RL202") == []
    assert metrics(result, "fc1_relu")["bias_margin_min"] == pytest.approx(-2.68, abs=0.01)


def test_rl202_layernorm(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("x", ["n", 16])
    y = b.gemm(x, 16, 16, name="fc1")
    beta = np.full(16, -4.0, np.float32)
    y = b.node("LayerNormalization", [y, b.const(np.ones(16, np.float32)), b.const(beta)], "ln1", axis=-1)
    y = b.relu(y, "fc1_relu")
    [finding] = findings(lint(tmp_path, b.build([b.gemm(y, 16, 2, name="head")])), "RL202")
    assert finding.evidence["norm_op"] == "LayerNormalization" and finding.units.count == 16
