"""Evidence and confidence on dead-unit claims: the firing-rate bound and the severity policy (RL501-RL503)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from relulint.cli import main
from relulint.config import Config
from relulint.engine import analyse
from relulint.findings import Severity
from relulint.modelkit import ModelBuilder
from relulint.probe.result import firing_rate_bound, rate_text, samples_for_bound


def run(path, select=("RL5",), **config):
    result = analyse(str(path), Config(select=select, **config))
    assert result.error is None, result.error
    return result


def findings(result, rule):
    return [f for f in result.findings if f.rule == rule]


def test_the_bound_is_the_exact_binomial_one_for_zero_positives():
    assert firing_rate_bound(1797) == pytest.approx(1 - 0.05 ** (1 / 1797))
    assert rate_text(firing_rate_bound(1797)) == "0.17%"
    assert rate_text(firing_rate_bound(32)) == "8.9%"
    # (1 - p)^N = 0.05 at the bound: N trials with no positive are exactly that unlikely there
    assert (1 - firing_rate_bound(64)) ** 64 == pytest.approx(0.05)
    assert samples_for_bound(0.01) == 299
    assert firing_rate_bound(299) <= 0.01 < firing_rate_bound(298)
    assert firing_rate_bound(0) == 1.0


def threshold_model(thresholds, activation="Relu"):
    """One input feature in [0, 1); unit i is relu(x - thresholds[i]): it fires where x > thresholds[i]."""
    units = len(thresholds)
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 1])
    weight = np.ones((1, units), np.float32)
    bias = -np.asarray(thresholds, np.float32)
    z = b.node("Add", [b.node("MatMul", [x, b.const(weight)], name="fc1"), b.const(bias)])
    h = b.node(activation, [z], name="act1")
    return b.build([b.node("MatMul", [h, b.const(np.ones((units, 1), np.float32))], name="head")])


def test_a_unit_firing_on_two_percent_is_not_an_error_on_64_samples(tmp_path):
    # Half the units fire only where x > 0.98: on 2% of inputs drawn uniformly from [0, 1).
    path = tmp_path / "m.onnx"
    onnx.save(threshold_model([0.98] * 8 + [0.0] * 8), path)
    rng = np.random.default_rng(5)
    population = rng.random((5000, 1)).astype(np.float32)
    assert 0.015 < np.mean(population > 0.98) < 0.025
    # 64 samples on which those units happen not to fire (as about 27% of 64-sample draws do)
    quiet = population[population[:, 0] <= 0.98][:64]
    np.save(tmp_path / "few.npy", quiet)
    result = run(path, data=str(tmp_path / "few.npy"), samples=64)
    (finding,) = findings(result, "RL501")
    assert finding.severity == Severity.WARNING
    assert finding.evidence["evidence"] == "data" and finding.evidence["samples"] == 64
    assert finding.evidence["firing_rate_bound"] == pytest.approx(firing_rate_bound(64))
    assert "suspicion" in finding.message and "299 samples" in finding.message and "4.6%" in finding.message
    summary = findings(result, "RL503")
    assert summary and summary[0].severity == Severity.NOTE
    # every sample of the population: the units fire, nothing is dead
    np.save(tmp_path / "all.npy", population)
    result = run(path, data=str(tmp_path / "all.npy"), samples=5000)
    assert not findings(result, "RL501") and result.analyses.to_json()["probe"]["samples"] == 5000


def dead_layer_model():
    b = ModelBuilder(seed=1)
    x = b.input("x", ["N", 16])
    bias = np.zeros(32, np.float32)
    bias[:20] = -100.0
    h = b.relu(b.gemm(x, 16, 32, bias=bias, name="fc1"), "relu1")
    return b.build([b.gemm(h, 32, 4, name="fc2")])


def test_a_truly_dead_layer_is_an_error_with_enough_data(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(dead_layer_model(), path)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32))
    result = run(path, data=str(tmp_path / "x.npy"), samples=400)
    (finding,) = findings(result, "RL501")
    assert finding.severity == Severity.ERROR and finding.units.count == 20
    assert finding.evidence["evidence"] == "data" and finding.evidence["firing_rate_bound"] < 0.01
    assert "each fires on under 0.75% of inputs (95% confidence)" in finding.message
    layer = result.analyses.to_json()["probe"]["layers"]["relu1"]
    assert layer["evidence"] == "data" and layer["samples"] == 400
    assert layer["firing_rate_bound"] == pytest.approx(firing_rate_bound(400), rel=1e-5)
    record = next(r for r in result.layers if r["name"] == "relu1")
    assert record["metrics"]["probe_evidence"] == "data"
    # the rate is an option: asking for 0.1% makes 400 samples too few
    strict = run(path, data=str(tmp_path / "x.npy"), samples=400, rule_options={"RL501": {"max_firing_rate": 0.001}})
    assert [f.severity for f in findings(strict, "RL501")] == [Severity.WARNING]


def test_on_synthetic_inputs_a_dead_layer_is_a_suspicion(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(dead_layer_model(), path)
    result = run(path, samples=400)
    (finding,) = findings(result, "RL501")
    assert finding.severity == Severity.WARNING and finding.evidence["evidence"] == "synthetic"
    assert "suspicion" in finding.message and "--data" in finding.message


def test_units_proven_dead_are_an_error_on_synthetic_inputs(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(dead_layer_model(), path)
    result = run(path, select=("RL5", "RL6"), samples=32, input_ranges={"x": ((-1.0, 1.0),)})
    (finding,) = findings(result, "RL501")
    assert finding.severity == Severity.ERROR
    assert finding.evidence["evidence"] == "proven" and finding.evidence["proven_dead"] == 20
    assert "proven dead for every input" in finding.message


def test_the_evidence_reaches_sarif_and_text(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(dead_layer_model(), path)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((1797, 16)).astype(np.float32))
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            str(path),
            "--data",
            str(tmp_path / "x.npy"),
            "--samples",
            "1797",
            "--format",
            "sarif",
            "--sarif-root",
            str(tmp_path),
        ],
    )
    assert out.exit_code == 1, out.output
    sarif = json.loads(out.output)
    (result,) = [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "RL501"]
    assert result["level"] == "error"
    assert result["properties"]["evidence"]["evidence"] == "data"
    assert result["properties"]["evidence"]["samples"] == 1797
    text = runner.invoke(main, [str(path), "--data", str(tmp_path / "x.npy"), "--samples", "1797"]).output
    assert "never output a positive value on 1,797 samples of real data: each fires on under 0.17% of inputs" in text


@pytest.mark.parametrize("op", ["LeakyRelu", "Elu"])
def test_a_variant_below_zero_is_not_dead(tmp_path, op):
    path = tmp_path / "m.onnx"
    onnx.save(threshold_model([5.0] * 10 + [0.0] * 6, op), path)  # 10 units always on the negative side
    result = run(path, input_dist="uniform:0,1", samples=64)
    assert not findings(result, "RL501") and not findings(result, "RL502") and not findings(result, "RL503")
    layer = result.analyses.to_json()["probe"]["layers"]["act1"]
    assert layer["never_positive"] == 10 and layer["dead"] == 0


def test_hardswish_units_stuck_at_zero_are_dead_and_no_switch_is_suggested(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(threshold_model([10.0] * 10 + [1.5] * 2 + [0.0] * 4, "HardSwish"), path)
    result = run(path, input_dist="uniform:0,1", samples=64)
    (finding,) = findings(result, "RL501")
    # x - 10 <= -3: HardSwish outputs 0 there, with no gradient; x - 1.5 in (-1.5, -0.5): negative, alive
    assert finding.units.count == 10 and "flat part of HardSwish" in finding.message
    assert "LeakyReLU" not in finding.fix
    assert result.analyses.to_json()["probe"]["layers"]["act1"]["never_positive"] == 12


def decomposed_model(form):
    """A Gemm followed by hard-swish or SiLU written out in elementary ops, as exporters do."""
    b = ModelBuilder(seed=2)
    x = b.input("x", ["N", 4])
    bias = np.zeros(8, np.float32)
    bias[:5] = -100.0  # hard-swish outputs 0 below -3: these 5 units are dead
    z = b.gemm(x, 4, 8, bias=bias, name="fc1")
    if form == "clip-div":  # PaddleOCR: x * Clip(x + 3, 0, 6) / 6
        gate = b.node(
            "Clip", [b.node("Add", [z, b.const(np.float32(3))]), b.const(np.float32(0)), b.const(np.float32(6))]
        )
        y = b.node("Div", [b.node("Mul", [z, gate]), b.const(np.float32(6))], name="hswish")
    elif form == "clip-mul-sixth":  # x * (Clip(x + 3, 0, 6) * (1/6))
        gate = b.node(
            "Clip", [b.node("Add", [b.const(np.float32(3)), z]), b.const(np.float32(0)), b.const(np.float32(6))]
        )
        y = b.node("Mul", [z, b.node("Mul", [gate, b.const(np.float32(1 / 6))])], name="hswish")
    elif form == "hardsigmoid":
        y = b.node("Mul", [b.node("HardSigmoid", [z], alpha=1 / 6, beta=0.5), z], name="hswish")
    else:  # SiLU
        y = b.node("Mul", [z, b.node("Sigmoid", [z])], name="hswish")
    return b.build([b.gemm(y, 8, 2, name="head")])


@pytest.mark.parametrize("form", ["clip-div", "clip-mul-sixth", "hardsigmoid", "silu"])
def test_decomposed_activations_are_one_variant_layer(tmp_path, form):
    from relulint.graph import build_graph
    from relulint.loader import load_model
    from relulint.units import find_layers

    path = tmp_path / "m.onnx"
    onnx.save(decomposed_model(form), path)
    (layer,) = find_layers(build_graph(load_model(str(path))))
    expected = "SiLU (decomposed)" if form == "silu" else "HardSwish (decomposed)"
    assert (layer.name, layer.activation_op, layer.family) == ("hswish", expected, "variant")
    assert layer.linear == "fc1" and layer.units == 8
    result = run(path, samples=64)
    layer_probe = result.analyses.to_json()["probe"]["layers"]["hswish"]
    # at x = -100 hard-swish is exactly 0, and SiLU's x * sigmoid(x) underflows to 0 in float32: dead
    assert layer_probe["never_positive"] == 5 and layer_probe["dead"] == 5


def test_a_plain_relu6_stays_a_relu6(tmp_path):
    from relulint.graph import build_graph
    from relulint.loader import load_model
    from relulint.units import find_layers

    b = ModelBuilder(seed=2)
    x = b.input("x", ["N", 4])
    z = b.gemm(x, 4, 8, name="fc1")
    y = b.node("Clip", [z, b.const(np.float32(0)), b.const(np.float32(6))], name="relu6")
    y = b.node("Div", [b.node("Mul", [z, y]), b.const(np.float32(6))], name="not_hswish")  # no + 3: not hard-swish
    path = tmp_path / "m.onnx"
    onnx.save(b.build([y]), path)
    (layer,) = find_layers(build_graph(load_model(str(path))))
    assert (layer.name, layer.activation_op, layer.family) == ("relu6", "Clip", "plain")
