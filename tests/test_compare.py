"""RL701/RL702/RL703: comparing two checkpoints of one training run (numpy training, no torch)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from relulint.cli import main
from relulint.compare import compare_checkpoints, relative_update
from relulint.config import Config
from relulint.context import Context
from relulint.engine import analyse
from relulint.errors import ModelError
from relulint.graph import build_graph
from relulint.loader import load_model
from relulint.modelkit import ModelBuilder
from relulint.units import find_layers

WIDTHS = [16, 64, 64, 4]
SANE_RATE, HIGH_RATE = 0.05, 2.0
EPOCHS = 5

Params = list[tuple[np.ndarray, np.ndarray]]


# ---- a small MLP trained with numpy ----------------------------------------------------------
def make_data(n: int = 2048, features: int = 16, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal inputs (what the probe feeds by default), labels from a fixed random teacher."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, features))
    teacher = rng.standard_normal((features, classes))
    labels = np.argmax(x @ teacher + 0.5 * np.tanh(2 * x[:, :classes]), axis=1)
    return x, labels


def he_init(widths: list[int], seed: int = 1) -> Params:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((o, i)) * np.sqrt(2 / i), np.zeros(o)) for i, o in pairwise(widths)]


def train(params: Params, x: np.ndarray, labels: np.ndarray, rate: float, epochs: int, batch: int = 32) -> list[Params]:
    """Plain SGD on softmax cross-entropy; returns the parameters after each epoch."""
    rng = np.random.default_rng(0)
    params = [(w.copy(), b.copy()) for w, b in params]
    checkpoints = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            index = order[start : start + batch]
            params = _sgd_step(params, x[index], labels[index], rate)
        checkpoints.append([(w.copy(), b.copy()) for w, b in params])
    return checkpoints


def _sgd_step(params: Params, x: np.ndarray, labels: np.ndarray, rate: float) -> Params:
    inputs, pre = [x], []
    for index, (w, b) in enumerate(params):
        z = inputs[-1] @ w.T + b
        pre.append(z)
        inputs.append(np.maximum(z, 0) if index < len(params) - 1 else z)
    logits = pre[-1] - pre[-1].max(axis=1, keepdims=True)
    grad = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    grad[np.arange(len(labels)), labels] -= 1
    grad /= len(labels)
    updated = []
    for index in reversed(range(len(params))):
        w, b = params[index]
        grad_w, grad_b = grad.T @ inputs[index], grad.sum(axis=0)
        if index:
            grad = (grad @ w) * (pre[index - 1] > 0)
        updated.append((w - rate * grad_w, b - rate * grad_b))
    return updated[::-1]


def to_onnx(params: Params) -> onnx.ModelProto:
    """Gemm+Relu layers named as a PyTorch export would keep them across checkpoints."""
    b = ModelBuilder(seed=0)
    y = b.input("x", ["N", params[0][0].shape[1]])
    for index, (w, bias) in enumerate(params):
        name = f"fc{index + 1}"
        y = b.node(
            "Gemm",
            [y, b.const(w.astype(np.float32), f"{name}.weight"), b.const(bias.astype(np.float32), f"{name}.bias")],
            name,
            transB=1,
        )
        if index < len(params) - 1:
            y = b.relu(y, f"{name}_relu")
    return b.build([y])


@dataclass
class Run:
    initial: Path
    first_epoch: Path
    last_epoch: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """The same initialization trained with a sane and with a too-high learning rate."""
    folder = tmp_path_factory.mktemp("checkpoints")
    x, labels = make_data()
    initial = he_init(WIDTHS)
    onnx.save(to_onnx(initial), folder / "init.onnx")
    result = {}
    for name, rate in (("sane", SANE_RATE), ("high", HIGH_RATE)):
        epochs = train(initial, x, labels, rate, EPOCHS)
        onnx.save(to_onnx(epochs[0]), folder / f"{name}_epoch1.onnx")
        onnx.save(to_onnx(epochs[-1]), folder / f"{name}_epoch{EPOCHS}.onnx")
        result[name] = Run(folder / "init.onnx", folder / f"{name}_epoch1.onnx", folder / f"{name}_epoch{EPOCHS}.onnx")
    return result


def compare(new: Path, old: Path, select=("RL7",), probe: bool = False, **options):
    return analyse(str(new), Config(select=select, probe=probe, compare=str(old), **options))


def rules_by_layer(result) -> set[tuple[str, str]]:
    return {(f.rule, f.node) for f in result.findings}


# ---- the training scenario (the probe feeds both checkpoints the same synthetic N(0, 1) inputs,
# the distribution the MLP was trained on) ---------------------------------------------------------
def test_sane_rate_after_one_epoch_gets_neither_rl701_nor_rl702(runs):
    result = compare(runs["sane"].first_epoch, runs["sane"].initial, probe=True)
    assert result.error is None
    assert not [f for f in result.findings if f.rule in ("RL701", "RL702")]
    data = result.analyses.to_json()["compare"]
    assert data["probe"]["inputs"] == "synthetic" and data["probe"]["samples"] == data["probe"]["old_samples"]
    for layer in data["layers"].values():
        assert 0 < layer["relative_update"] < 0.2
        assert layer["probe"]["dead_old"] == layer["probe"]["dead_new"] == 0


def test_high_rate_after_one_epoch_gets_rl701_and_rl702(runs):
    result = compare(runs["high"].first_epoch, runs["high"].initial, probe=True)
    found = rules_by_layer(result)
    assert {("RL701", "fc2_relu"), ("RL702", "fc1_relu"), ("RL702", "fc2_relu")} <= found
    died = next(f for f in result.findings if f.rule == "RL701" and f.node == "fc2_relu")
    assert str(died.severity) == "error"
    assert died.evidence["probe"]["dead_old"] == 0 and died.evidence["probe"]["newly_dead"] > 64 // 4
    assert "the probe saw" in died.message and str(runs["high"].initial) in died.message
    update = next(f for f in result.findings if f.rule == "RL702" and f.node == "fc2_relu")
    assert update.evidence["relative_update"] > 1.0 and "learning rate that is too high" in update.message
    assert ("RL703", "fc1_relu") in found  # the biases were thrown down with them


def test_high_rate_at_the_end_of_training_still_gets_rl701(runs):
    result = compare(runs["high"].last_epoch, runs["high"].initial, probe=True)
    died = next(f for f in result.findings if f.rule == "RL701" and f.node == "fc2_relu")
    assert died.evidence["probe"]["newly_dead"] > 64 // 2


def test_sane_rate_at_the_end_of_training_gets_no_checkpoint_finding(runs):
    result = compare(runs["sane"].last_epoch, runs["sane"].initial, probe=True)
    assert not [f for f in result.findings if f.rule in ("RL701", "RL702", "RL703")]


def test_without_the_probe_the_high_rate_still_gets_rl702(runs):
    result = compare(runs["high"].first_epoch, runs["high"].initial)
    assert {("RL702", "fc1_relu"), ("RL702", "fc2_relu")} <= rules_by_layer(result)
    assert "probe" not in result.analyses.to_json()["compare"]["sources"]


# ---- matching the checkpoints ------------------------------------------------------------------
def test_identical_checkpoints_have_zero_updates(runs):
    result = compare(runs["sane"].initial, runs["sane"].initial)
    data = result.analyses.to_json()["compare"]
    assert data["same_file"] is True
    assert all(layer["relative_update"] == 0 for layer in data["layers"].values())
    assert not result.findings


def _context(path: Path, config: Config) -> Context:
    loaded = load_model(path)
    graph = build_graph(loaded)
    return Context(loaded=loaded, graph=graph, layers=find_layers(graph), config=config)


def test_checkpoints_of_another_architecture_are_an_error(tmp_path, runs):
    wider = to_onnx(he_init([16, 32, 64, 4]))
    onnx.save(wider, tmp_path / "wider.onnx")
    ctx = _context(runs["sane"].initial, Config(compare=str(tmp_path / "wider.onnx")))
    with pytest.raises(ModelError) as raised:
        compare_checkpoints(ctx, str(tmp_path / "wider.onnx"))
    problem = raised.value.problem
    assert problem.startswith(f"cannot compare with {tmp_path / 'wider.onnx'}: the checkpoints do not match")
    assert "layer 'fc1_relu' has 64 units here and 32 there" in problem
    assert "initializer 'fc1.weight' has shape [64, 16] here and [32, 16] there" in problem
    assert raised.value.path == str(runs["sane"].initial)


def test_mismatched_checkpoints_from_the_cli_are_one_line_exit_2(tmp_path, runs):
    onnx.save(to_onnx(he_init([16, 32, 64, 4])), tmp_path / "wider.onnx")
    new = str(runs["sane"].initial)
    result = CliRunner().invoke(main, [new, "--no-probe", "--compare", str(tmp_path / "wider.onnx")])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        f"relulint: error: {new}: cannot compare with {tmp_path / 'wider.onnx'}: the checkpoints do not match"
    )


def test_renamed_initializers_are_an_error(tmp_path, runs):
    model = onnx.load(runs["sane"].initial)
    for tensor in model.graph.initializer:
        if tensor.name == "fc2.weight":
            tensor.name = "onnx::Gemm_17"
    for node in model.graph.node:
        node.input[:] = ["onnx::Gemm_17" if name == "fc2.weight" else name for name in node.input]
    onnx.save(model, tmp_path / "renamed.onnx")
    ctx = _context(tmp_path / "renamed.onnx", Config())
    with pytest.raises(ModelError) as raised:
        compare_checkpoints(ctx, str(runs["sane"].initial))
    assert "layer 'fc2_relu' is fed by 'onnx::Gemm_17' here and 'fc2.weight' there" in raised.value.problem
    assert "initializer 'onnx::Gemm_17' is not in the old checkpoint" in raised.value.problem


def test_an_unreadable_old_checkpoint_is_an_error(tmp_path, runs):
    ctx = _context(runs["sane"].initial, Config())
    with pytest.raises(ModelError, match=r"cannot compare with .*missing\.onnx: no such file"):
        compare_checkpoints(ctx, str(tmp_path / "missing.onnx"))


def test_without_compare_the_rules_stay_silent_and_say_so(runs):
    result = analyse(str(runs["sane"].initial), Config(select=("RL7",), probe=False))
    assert not result.findings and "compare" not in result.analyses.to_json()
    assert any("no --compare OLD.onnx given" in note.message for note in result.notes)
    quiet = analyse(str(runs["sane"].initial), Config(probe=False))
    assert not any("--compare" in note.message for note in quiet.notes)


# ---- the measures, by hand -------------------------------------------------------------------
def test_relative_update_by_hand():
    assert relative_update(np.array([[3.0, 0.0]]), np.array([[3.0, 4.0]])) == pytest.approx(0.8)
    assert relative_update(np.ones((2, 2)), np.zeros((2, 2))) is None
    assert relative_update(np.array([np.nan]), np.array([1.0])) is None


def _one_layer(bias: list[float]) -> onnx.ModelProto:
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 2])
    weight = b.const(np.eye(2, dtype=np.float32), "fc.weight")
    y = b.node("Gemm", [x, weight, b.const(np.array(bias, np.float32), "fc.bias")], "fc", transB=1)
    return b.build([b.relu(y, "act")])


def test_rl703_measures_the_bias_drop_in_standard_deviations(tmp_path):
    # Unit weights of norm 1 on inputs of scale 1 (the margins analysis's input_scale): sigma = 1, so the shift is the drop.
    onnx.save(_one_layer([0.0, 0.0]), tmp_path / "old.onnx")
    onnx.save(_one_layer([-2.0, -0.5]), tmp_path / "new.onnx")
    result = compare(tmp_path / "new.onnx", tmp_path / "old.onnx")
    (finding,) = [f for f in result.findings if f.rule == "RL703"]
    assert finding.units.count == 1 and finding.units.worst == (0,)
    assert finding.evidence["shift_min"] == pytest.approx(-2.0, abs=1e-6)
    layer = result.analyses.to_json()["compare"]["layers"]["act"]
    assert layer["bias_shift_min"] == pytest.approx(-2.0, abs=1e-6)
    assert layer["relative_update"] == 0
    lenient = compare(tmp_path / "new.onnx", tmp_path / "old.onnx", rule_options={"RL703": {"k": 2.5}})
    assert not [f for f in lenient.findings if f.rule == "RL703"]


def test_rl701_by_the_static_margins_is_a_warning(tmp_path):
    # A bias of -5 on unit-scale inputs puts unit 0 five standard deviations below zero: at risk by the margins analysis's k = 3.
    onnx.save(_one_layer([0.0, 0.0]), tmp_path / "old.onnx")
    onnx.save(_one_layer([-5.0, 0.0]), tmp_path / "new.onnx")
    result = compare(tmp_path / "new.onnx", tmp_path / "old.onnx")
    (finding,) = [f for f in result.findings if f.rule == "RL701"]
    assert str(finding.severity) == "warning" and finding.units.worst == (0,)
    assert finding.evidence["margins"] == {"dead_old": 0, "dead_new": 1, "newly_dead": 1}
    assert "static margins put 1 more than 3 standard deviations below zero" in finding.message


def test_rl701_by_the_proof_is_an_error(tmp_path):
    onnx.save(_one_layer([0.0, 0.0]), tmp_path / "old.onnx")
    onnx.save(_one_layer([-5.0, 0.0]), tmp_path / "new.onnx")
    result = compare(tmp_path / "new.onnx", tmp_path / "old.onnx", input_ranges={"x": ((-1.0, 1.0),)})
    (finding,) = [f for f in result.findings if f.rule == "RL701"]
    assert str(finding.severity) == "error"
    assert finding.evidence["proof"] == {"dead_old": 0, "dead_new": 1, "newly_dead": 1}
    assert result.analyses.to_json()["compare"]["layers"]["act"]["proof"]["newly_dead"] == 1


def test_cli_compare_reaches_the_json_report(tmp_path):
    onnx.save(_one_layer([0.0, 0.0]), tmp_path / "old.onnx")
    onnx.save(_one_layer([-5.0, 0.0]), tmp_path / "new.onnx")
    runner = CliRunner()
    args = [str(tmp_path / "new.onnx"), "--no-probe", "--select", "RL7", "--compare", str(tmp_path / "old.onnx")]
    text = runner.invoke(main, args)
    assert text.exit_code == 0 and "RL701" in text.output and "RL703" in text.output  # warnings only
    data = json.loads(runner.invoke(main, [*args, "--format", "json"]).output)
    model = data["models"][0]
    assert model["compare"]["old"]["path"] == str(tmp_path / "old.onnx")
    assert set(model["compare"]["layers"]["act"]) >= {"units", "relative_update", "bias_shift_min", "margins"}
    assert model["units"][0]["metrics"]["relative_update"] == 0


def test_the_old_checkpoint_is_probed_on_exactly_the_new_ones_samples(tmp_path):
    # --samples auto stops when *a* model's dead set settles. Old: a unit at -2.6 fires on 0.5% of N(0, 1)
    # inputs, first on sample 286 with seed 7, so its dead set changes late and auto draws more samples
    # than for the new checkpoint, whose units are plainly alive or dead; a unit alive in the old one only
    # on samples the new one never saw would then count as "died". Both must see the same samples.
    onnx.save(_one_layer([-2.6, 0.0]), tmp_path / "old.onnx")
    onnx.save(_one_layer([-50.0, 0.0]), tmp_path / "new.onnx")
    result = compare(tmp_path / "new.onnx", tmp_path / "old.onnx", probe=True, seed=7, input_dist="normal")
    probe = result.analyses.to_json()["compare"]["probe"]
    assert probe["samples"] == probe["old_samples"] > 0
    alone = analyse(
        str(tmp_path / "old.onnx"), Config(select=("RL5",), seed=7, input_dist="normal")
    ).analyses.to_json()["probe"]
    assert alone["samples"] > probe["samples"]  # on its own the old checkpoint needs more: the test can fail
