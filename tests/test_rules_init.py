"""The initialization rules RL101-RL104 on models built in the tests."""

from __future__ import annotations

import numpy as np
import pytest

from relulint.config import Config
from relulint.engine import analyse
from relulint.findings import Severity
from relulint.modelkit import ModelBuilder
from relulint.stats import weight_stats

FAN_IN, UNITS = 64, 64
HE_STD = np.sqrt(2.0 / FAN_IN)
XAVIER_STD = np.sqrt(2.0 / (FAN_IN + UNITS))


def exact_std(shape: tuple[int, int], std: float, seed: int = 0) -> np.ndarray:
    """Zero-mean weights whose population std is ``std`` (to float32 precision)."""
    z = np.random.default_rng(seed).standard_normal(shape)
    z = (z - z.mean()) / z.std()
    return (z * std).astype(np.float32)


def one_layer_model(weight: np.ndarray, bias: np.ndarray | None = None, norm: dict | None = None):
    """input -> Gemm(+bias) [-> BatchNorm] -> Relu -> Gemm head (so the ReLU is not the output)."""
    units, fan_in = weight.shape
    b = ModelBuilder(seed=0)
    x = b.input("x", ["n", fan_in])
    y = b.gemm(x, fan_in, units, weight=weight, bias=bias, name="fc1")
    if norm is not None:
        y = b.batchnorm(y, units, gamma=norm.get("gamma"), beta=norm.get("beta"), name="bn1")
    y = b.relu(y, "fc1_relu")
    return b.build([b.gemm(y, units, 4, name="head")])


def lint(tmp_path, model, select=("RL1", "RL2"), **config):
    path = tmp_path / "model.onnx"
    import onnx

    onnx.save(model, path)
    return analyse(str(path), Config(probe=False, select=select, **config))


def findings(result, rule):
    assert result.error is None, result.error
    return [f for f in result.findings if f.rule == rule]


def rules_fired(result):
    assert result.error is None, result.error
    return sorted({f.rule for f in result.findings if f.severity >= Severity.WARNING})


# ---- RL101 weight scale ---------------------------------------------------------------------------
def test_rl101_silent_on_he_init(tmp_path):
    assert findings(lint(tmp_path, one_layer_model(exact_std((UNITS, FAN_IN), HE_STD))), "RL101") == []


def test_rl101_fires_on_tiny_weights_with_the_numbers(tmp_path):
    result = lint(tmp_path, one_layer_model(exact_std((UNITS, FAN_IN), 0.01)))
    [finding] = findings(result, "RL101")
    assert finding.severity == Severity.WARNING
    assert finding.node == "fc1_relu" and finding.tensor is not None
    assert finding.evidence["direction"] == "small"
    assert finding.evidence["std"] == pytest.approx(0.01, rel=1e-4)
    assert finding.evidence["he_ratio"] == pytest.approx(0.01 / HE_STD, rel=1e-4)
    assert "0.01" in finding.message and "He (0.177)" in finding.message


def test_rl101_fires_on_huge_weights(tmp_path):
    [finding] = findings(lint(tmp_path, one_layer_model(exact_std((UNITS, FAN_IN), 10 * HE_STD))), "RL101")
    assert finding.evidence["direction"] == "large"
    assert finding.evidence["he_ratio"] == pytest.approx(10.0, rel=1e-4)


@pytest.mark.parametrize(("xavier_ratio", "fires"), [(0.24, True), (0.26, False)])
def test_rl101_edge_of_the_low_band_is_xavier_based(tmp_path, xavier_ratio, fires):
    # 0.26x Xavier is 0.18x He: below the band around He but inside the one around Xavier, so silent.
    model = one_layer_model(exact_std((UNITS, FAN_IN), xavier_ratio * XAVIER_STD))
    assert bool(findings(lint(tmp_path, model), "RL101")) == fires


@pytest.mark.parametrize(("he_ratio", "fires"), [(4.1, True), (3.9, False)])
def test_rl101_edge_of_the_high_band(tmp_path, he_ratio, fires):
    model = one_layer_model(exact_std((UNITS, FAN_IN), he_ratio * HE_STD))
    assert bool(findings(lint(tmp_path, model), "RL101")) == fires


def test_rl101_bands_are_configurable(tmp_path):
    model = one_layer_model(exact_std((UNITS, FAN_IN), 2 * HE_STD))
    assert findings(lint(tmp_path, model), "RL101") == []
    narrow = {"RL101": {"max_ratio": 1.5}}
    assert len(findings(lint(tmp_path, model, rule_options=narrow), "RL101")) == 1


def test_rl101_skips_normalized_layers_unless_asked(tmp_path):
    model = one_layer_model(exact_std((UNITS, FAN_IN), 0.001), norm={})
    assert findings(lint(tmp_path, model), "RL101") == []
    options = {"RL101": {"check_normalized": True}}
    assert len(findings(lint(tmp_path, model, rule_options=options), "RL101")) == 1


def test_rl101_silent_on_a_folded_layer_far_off_the_band_with_a_note_saying_why(tmp_path):
    # 3x3 depthwise-like fan-in 9 with a BatchNorm folded in: every unit scaled by its own gamma / sigma.
    # The std is 6x He, as on the trained MobileNet-style model of issue 12, but this is no initialization.
    units, fan_in = 64, 9
    rng = np.random.default_rng(3)
    weight = rng.normal(0.0, 1.0, (units, fan_in)) * rng.uniform(0.2, 3.0, (units, 1))
    weight *= 6 * np.sqrt(2 / fan_in) / weight.std()
    result = lint(tmp_path, one_layer_model(weight.astype(np.float32), bias=np.full(units, 0.1, np.float32)))
    assert findings(result, "RL101") == []
    [note] = [n for n in result.notes if n.message.startswith("RL101")]
    assert "look trained or BatchNorm-folded" in note.message and note.node == "fc1_relu"
    [layer] = [layer for layer in result.layers if layer["name"] == "fc1_relu"]
    assert layer["metrics"]["looks_initialized"] is False and layer["metrics"]["scale_dispersion"] > 3
    judged = lint(tmp_path, one_layer_model(weight.astype(np.float32)), rule_options={"RL101": {"check_trained": True}})
    assert len(findings(judged, "RL101")) == 1


def test_rl101_silent_on_trained_weights_and_firing_on_the_same_init_scaled_wrong(tmp_path):
    sklearn = pytest.importorskip("sklearn.neural_network")
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the convergence warning of a short run
        trained = sklearn.MLPClassifier((64,), max_iter=300, random_state=0).fit(x / 16, y)
    weight = trained.coefs_[0].T.astype(np.float32)  # [64 units, 64 pixels]
    scale = 5 * np.sqrt(2 / weight.shape[1]) / weight.std()
    result = lint(tmp_path, one_layer_model(weight * scale))  # trained weights, scaled far above He
    assert findings(result, "RL101") == []
    fresh = exact_std(weight.shape, 5 * np.sqrt(2 / weight.shape[1]))  # an init at the same scale
    assert len(findings(lint(tmp_path, one_layer_model(fresh)), "RL101")) == 1


# ---- RL102 constant weights -----------------------------------------------------------------------
def test_rl102_zero_weights_give_one_finding(tmp_path):
    weight = np.zeros((UNITS, FAN_IN), np.float32)
    result = lint(tmp_path, one_layer_model(weight, bias=np.full(UNITS, -1.0, np.float32)))
    [finding] = findings(result, "RL102")
    assert finding.severity == Severity.ERROR
    assert finding.evidence["all_zero"] is True
    assert finding.units.count == finding.units.total == UNITS
    assert "are 0" in finding.message
    assert [f.rule for f in result.findings] == ["RL102"]  # not RL101, RL104 nor RL201 as well


def test_rl102_constant_nonzero_weights(tmp_path):
    result = lint(tmp_path, one_layer_model(np.full((UNITS, FAN_IN), 0.05, np.float32)))
    [finding] = findings(result, "RL102")
    assert finding.evidence["all_zero"] is False and finding.evidence["value"] == pytest.approx(0.05)
    assert [f.rule for f in result.findings] == ["RL102"]


def test_rl102_silent_on_random_weights(tmp_path):
    assert findings(lint(tmp_path, one_layer_model(exact_std((UNITS, FAN_IN), HE_STD))), "RL102") == []


@pytest.mark.parametrize(("noise", "fires"), [(1e-7, True), (1e-5, False)])
def test_rl102_edge_of_the_std_tolerance(tmp_path, noise, fires):
    # tolerance 1e-6 x max(|mean| 0.05, He std 0.177) = 1.8e-7
    weight = (0.05 + exact_std((UNITS, FAN_IN), noise)).astype(np.float32)
    assert weight_stats(weight, FAN_IN, UNITS).std == pytest.approx(noise, rel=0.05)
    assert bool(findings(lint(tmp_path, one_layer_model(weight)), "RL102")) == fires
    # the tolerance is the margins analysis's, set in its table or, as before, by RL102's std_tolerance
    wider = {"margins": {"constant_tolerance": 1e-3}}
    assert findings(lint(tmp_path, one_layer_model(weight), analysis_options=wider), "RL102")
    assert findings(lint(tmp_path, one_layer_model(weight), rule_options={"RL102": {"std_tolerance": 1e-3}}), "RL102")


# ---- RL103 non-finite parameters ------------------------------------------------------------------
def test_rl103_nan_weight_gives_one_finding(tmp_path):
    weight = exact_std((UNITS, FAN_IN), HE_STD)
    weight[3, 7] = np.nan
    weight[5, :] = np.inf
    result = lint(tmp_path, one_layer_model(weight, bias=np.full(UNITS, -10.0, np.float32)))
    [finding] = findings(result, "RL103")
    assert finding.severity == Severity.ERROR
    assert finding.units.count == 2 and finding.units.worst == (3, 5)
    assert finding.evidence["weights"] == {"nan": 1, "inf": FAN_IN, "-inf": 0}
    assert [f.rule for f in result.findings] == ["RL103"]  # the -10 biases and the zeroed rows are not re-reported


def test_rl103_infinite_bias(tmp_path):
    bias = np.zeros(UNITS, np.float32)
    bias[:2] = -np.inf
    [finding] = findings(lint(tmp_path, one_layer_model(exact_std((UNITS, FAN_IN), HE_STD), bias=bias)), "RL103")
    assert finding.units.count == 2 and finding.evidence["bias"]["-inf"] == 2


def test_rl103_nan_in_batchnorm_parameters(tmp_path):
    gamma = np.ones(UNITS, np.float32)
    gamma[10] = np.nan
    model = one_layer_model(exact_std((UNITS, FAN_IN), HE_STD), norm={"gamma": gamma})
    result = lint(tmp_path, model)
    [finding] = findings(result, "RL103")
    assert finding.units.worst == (10,) and "gamma" in finding.evidence
    assert findings(result, "RL202") == []


def test_rl103_silent_on_large_but_finite_weights(tmp_path):
    weight = exact_std((UNITS, FAN_IN), HE_STD)
    weight[0, 0] = np.finfo(np.float32).max  # the edge: huge is finite (RL101 may judge it, not RL103)
    result = lint(tmp_path, one_layer_model(weight))
    assert findings(result, "RL103") == []


# ---- RL104 zero weight rows -----------------------------------------------------------------------
def zero_rows_model(zero: int, units: int = 10, bias: float = 0.0):
    weight = exact_std((units, FAN_IN), HE_STD)
    weight[:zero] = 0.0
    return one_layer_model(weight, bias=np.full(units, bias, np.float32))


def test_rl104_silent_without_zero_rows(tmp_path):
    assert findings(lint(tmp_path, zero_rows_model(0)), "RL104") == []


@pytest.mark.parametrize(("zero", "severity"), [(1, Severity.WARNING), (4, Severity.WARNING), (5, Severity.ERROR)])
def test_rl104_severity_edge_at_40_percent(tmp_path, zero, severity):
    [finding] = findings(lint(tmp_path, zero_rows_model(zero)), "RL104")
    assert finding.severity == severity
    assert finding.units.count == zero and finding.units.total == 10
    assert finding.units.worst == tuple(range(min(zero, 5)))
    assert f"{zero} of 10 units" in finding.message


def test_rl104_rows_with_a_positive_bias_can_still_learn(tmp_path):
    result = lint(tmp_path, zero_rows_model(3, bias=0.1))
    assert findings(result, "RL104") == []


def test_rl104_error_fraction_is_configurable(tmp_path):
    options = {"RL104": {"error_fraction": 0.05}}
    [finding] = findings(lint(tmp_path, zero_rows_model(1), rule_options=options), "RL104")
    assert finding.severity == Severity.ERROR
