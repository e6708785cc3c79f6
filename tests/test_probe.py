"""The probe pass: exact dead-unit counts, If branches, failures that cost only the probe, RL501-RL505."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from relulint.cli import main
from relulint.config import Config
from relulint.engine import analyse
from relulint.findings import Severity
from relulint.modelkit import ModelBuilder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def probe(path, select=("RL5",), **config):
    result = analyse(str(path), Config(select=select, **config))
    assert result.error is None, result.error
    return result


def save(tmp_path, model, name="model.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return path


def rule_findings(result, rule):
    return [f for f in result.findings if f.rule == rule]


def probe_notes(result):
    return [n.message for n in result.notes if "probe" in n.message]


# ---- a small MLP trained in numpy until units die --------------------------------------------------


def train_mlp(seed=1, lr=1.0, steps=60):
    """Two ReLU layers trained by full-batch gradient descent with a learning rate that kills units."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    y = (np.sin(x[:, :1] * 2) + x[:, 1:2] ** 2).astype(np.float32)
    w1 = (rng.standard_normal((32, 8)) * np.sqrt(2 / 8)).astype(np.float32)
    b1 = np.zeros(32, np.float32)
    w2 = (rng.standard_normal((32, 32)) * np.sqrt(2 / 32)).astype(np.float32)
    b2 = np.zeros(32, np.float32)
    w3 = (rng.standard_normal((1, 32)) * np.sqrt(1 / 32)).astype(np.float32)
    b3 = np.zeros(1, np.float32)
    for _ in range(steps):
        z1 = x @ w1.T + b1
        h1 = np.maximum(z1, 0)
        z2 = h1 @ w2.T + b2
        h2 = np.maximum(z2, 0)
        out = h2 @ w3.T + b3
        grad = 2 * (out - y) / len(x)
        gw3, gb3 = grad.T @ h2, grad.sum(0)
        g2 = (grad @ w3) * (z2 > 0)
        gw2, gb2 = g2.T @ h1, g2.sum(0)
        g1 = (g2 @ w2) * (z1 > 0)
        gw1, gb1 = g1.T @ x, g1.sum(0)
        for p, g in ((w1, gw1), (b1, gb1), (w2, gw2), (b2, gb2), (w3, gw3), (b3, gb3)):
            p -= lr * np.clip(g, -1, 1).astype(np.float32)
    return x, (w1, b1, w2, b2, w3, b3)


def mlp_model(params):
    w1, b1, w2, b2, w3, b3 = params
    b = ModelBuilder()
    x = b.input("x", ["N", 8])
    h = b.relu(b.gemm(x, 8, 32, weight=w1, bias=b1, name="fc1"), "relu1")
    h = b.relu(b.gemm(h, 32, 32, weight=w2, bias=b2, name="fc2"), "relu2")
    return b.build([b.gemm(h, 32, 1, weight=w3, bias=b3, name="fc3")])


def numpy_layers(x, params):
    """Pre-activations of both layers, computed the way the model does."""
    w1, b1, w2, b2, _, _ = params
    z1 = x @ w1.T + b1
    z2 = np.maximum(z1, 0) @ w2.T + b2
    return {"relu1": z1, "relu2": z2}


def test_dead_counts_equal_numpy_on_training_data(tmp_path):
    x, params = train_mlp()
    path = save(tmp_path, mlp_model(params))
    np.savez(tmp_path / "train.npz", x=x)
    result = probe(path, data=str(tmp_path / "train.npz"), samples=len(x), batch=64)
    layers = result.analyses.to_json()["probe"]["layers"]
    assert (
        result.analyses.to_json()["probe"]["inputs"] == "data" and result.analyses.to_json()["probe"]["samples"] == 256
    )
    expected = numpy_layers(x, params)
    total_dead = 0
    for name, z in expected.items():
        # Values this close to zero could round either way in two implementations; there are none.
        assert np.min(np.abs(z)) > 1e-5
        dead = int(np.sum(~(z > 0).any(axis=0)))
        total_dead += dead
        assert dead > 0 and layers[name]["dead"] == dead
        assert np.array_equal(np.round(np.asarray(layers[name]["positive_rate"]) * len(x)), (z > 0).sum(axis=0))
        record = next(r for r in result.layers if r["name"] == name)
        assert record["metrics"]["dead"] == dead
        assert record["metrics"]["probe_samples"] == 256
    assert total_dead >= 5  # the learning rate did kill units: the comparison is not trivial


def test_healthy_convnet_has_no_rl501():
    result = probe(EXAMPLES / "healthy_convnet.onnx")
    assert not rule_findings(result, "RL501")
    assert result.analyses.to_json()["probe"]["layers"]
    assert [f.severity for f in rule_findings(result, "RL504")] == [Severity.NOTE]


def negative_bias_mlp(dead_units: int, units: int = 64):
    b = ModelBuilder(seed=1)
    x = b.input("x", ["N", 16])
    bias = np.zeros(units, np.float32)
    bias[:dead_units] = -100.0
    h = b.relu(b.gemm(x, 16, units, bias=bias, name="fc1"), "relu1")
    return b.build([b.gemm(h, units, 4, name="fc2")])


def test_strongly_negative_biases_give_rl501_with_the_count(tmp_path):
    result = probe(save(tmp_path, negative_bias_mlp(30)))
    (finding,) = rule_findings(result, "RL501")
    # synthetic inputs only: a suspicion, one level below RL501's error
    assert finding.node == "relu1" and finding.severity == Severity.WARNING
    assert (finding.units.count, finding.units.total) == (30, 64)
    assert set(finding.units.worst) <= set(range(30))
    assert "synthetic" in finding.message and "--data" in finding.message
    assert not rule_findings(result, "RL502")  # above RL501's threshold: reported once
    (alone,) = rule_findings(probe(save(tmp_path, negative_bias_mlp(30)), select=("RL502",)), "RL502")
    assert alone.node == "relu1"  # without RL501, its milder companion reports the layer
    ignored = probe(save(tmp_path, negative_bias_mlp(30)), select=("RL5",), per_node_ignores={"relu1": ("RL501",)})
    assert not rule_findings(ignored, "RL501") and not rule_findings(ignored, "RL502")  # silenced means silenced


def test_rl502_between_thresholds_and_rl503_sums_up(tmp_path):
    path = save(tmp_path, negative_bias_mlp(10))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32))
    result = probe(path, data=str(tmp_path / "x.npy"), samples=300)
    assert not rule_findings(result, "RL501")
    (warning,) = rule_findings(result, "RL502")
    assert warning.units.count == 10 and warning.severity == Severity.WARNING
    # on synthetic inputs alone the same layer is a note: a suspicion
    (suspicion,) = rule_findings(probe(path), "RL502")
    assert suspicion.severity == Severity.NOTE and "suspicion" in suspicion.message
    (summary,) = rule_findings(result, "RL503")
    assert summary.units.count == 10 and summary.severity == Severity.NOTE


def conv_model(channels=(16, 12), dead=(5, 3)):
    """Two Conv+ReLU layers (16 channels: the blocked-layout path; 12: the fallback) with dead channels."""
    b = ModelBuilder(seed=3)
    x = b.input("x", ["N", 3, 10, 10])
    bias = np.zeros(channels[0], np.float32)
    bias[: dead[0]] = -1000
    y = b.relu(b.conv(x, 3, channels[0], 3, bias=bias, name="conv1"), "relu1")
    bias = np.full(channels[1], 0.1, np.float32)
    bias[: dead[1]] = -1000
    y = b.relu(b.conv(y, channels[0], channels[1], 3, bias=bias, name="conv2"), "relu2")
    return b.build([b.global_pool_flatten(y)])


def reference_activations(model, feed, names):
    """The activations themselves, from onnxruntime on the uninstrumented model."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in names:
        copy.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, feed)))


def test_pooled_statistics_match_the_activations(tmp_path):
    model = conv_model()
    path = save(tmp_path, model)
    data = np.random.default_rng(5).standard_normal((20, 3, 10, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    result = probe(path, data=str(tmp_path / "x.npy"), batch=8, samples=20)
    layers = result.analyses.to_json()["probe"]["layers"]
    acts = reference_activations(model, {"x": data}, ["relu1_out", "relu2_out"])
    for name, act in (("relu1", acts["relu1_out"]), ("relu2", acts["relu2_out"])):
        per_unit = np.moveaxis(act, 1, 0).reshape(act.shape[1], -1).astype(np.float64)
        layer = layers[name]
        assert layer["dead"] == int(np.sum(per_unit.max(axis=1) <= 0))
        assert layer["samples"] == 20
        assert np.allclose(layer["positive_rate"], (per_unit > 0).mean(axis=1), atol=1e-6)
        assert np.allclose(layer["max"], per_unit.max(axis=1), rtol=1e-5)
        assert np.allclose(layer["mean"], per_unit.mean(axis=1), rtol=1e-4, atol=1e-5)
        assert np.allclose(layer["std"], per_unit.std(axis=1), rtol=1e-3, atol=1e-4)
    assert (layers["relu1"]["dead"], layers["relu2"]["dead"]) == (5, 3)


def if_model(condition_true: bool):
    """A Relu with dead units inside the then-branch of an If on a computed condition."""
    b = ModelBuilder(seed=2)
    x = b.input("x", ["N", 8])
    mean = b.node("ReduceMean", [x], keepdims=0)
    threshold = b.const(np.array(-1e9 if condition_true else 1e9, np.float32))
    cond = b.node("Greater", [mean, threshold])
    w = b.he([16, 8], 8)
    bias = np.zeros(16, np.float32)
    bias[:12] = -100
    then_nodes = [
        helper.make_node("Gemm", ["x", "tw", "tb"], ["t_pre"], name="t_gemm", transB=1),
        helper.make_node("Relu", ["t_pre"], ["t_out"], name="t_relu"),
    ]
    then_graph = helper.make_graph(
        then_nodes,
        "then",
        [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "tw"), onnx.numpy_helper.from_array(bias, "tb")],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e_out"], name="e_id")],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)],
    )
    b.nodes.append(helper.make_node("If", [cond], ["y"], name="If_0", then_branch=then_graph, else_branch=else_graph))
    return b.build(["y"], output_shapes=[None])


def test_relu_inside_an_if_branch_is_probed_when_the_branch_runs(tmp_path):
    result = probe(save(tmp_path, if_model(True)), samples=32)
    layer = result.analyses.to_json()["probe"]["layers"]["If_0/then/t_relu"]
    assert layer["samples"] == 32 and layer["dead"] == 12
    (finding,) = rule_findings(result, "RL501")
    assert finding.node == "If_0/then/t_relu" and finding.units.count == 12


def test_a_branch_that_never_runs_reports_nothing(tmp_path):
    result = probe(save(tmp_path, if_model(False)))
    assert result.analyses.to_json()["probe"]["layers"]["If_0/then/t_relu"]["samples"] == 0
    assert not rule_findings(result, "RL501") and not rule_findings(result, "RL503")


def test_a_branch_that_never_runs_says_so_in_a_note(tmp_path):
    result = probe(save(tmp_path, if_model(False)))
    assert any("measured no value of 1 layer" in n and "no sample ran the If branch" in n for n in probe_notes(result))


def rank_hiding_if_model(then_rank_one: bool = False):
    """A ReLU reading an If whose branches differ in rank, so shape inference gives its input no rank (as
    torch exports an LSTM cell's conditional squeeze): units 1 and 3 planted dead by their bias.
    ``then_rank_one``: the branch that runs gives a rank-1 tensor instead, which has no axis of units."""
    b = ModelBuilder(seed=4)
    x = b.input("x", ["N", 3])
    bias = np.zeros(4, np.float32)
    bias[[1, 3]] = -100
    pre = b.node("Add", [b.node("MatMul", [x, b.const(b.he([3, 4], 3))]), b.const(bias)])
    cond = b.const(np.array(True))
    then_node = (
        helper.make_node("ReduceMax", [pre], ["t_out"], name="t_max", keepdims=0, axes=[0])
        if then_rank_one
        else helper.make_node("Identity", [pre], ["t_out"], name="t_id")
    )
    then_graph = helper.make_graph(
        [then_node], "then", [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)]
    )
    axes = onnx.numpy_helper.from_array(np.array([2], np.int64), "e_axes")
    else_graph = helper.make_graph(
        [helper.make_node("Unsqueeze", [pre, "e_axes"], ["e_out"], name="e_unsqueeze")],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)],
        [axes],
    )
    b.nodes.append(
        helper.make_node("If", [cond], ["joined"], name="If_0", then_branch=then_graph, else_branch=else_graph)
    )
    out = b.node("Relu", ["joined"], name="relu")
    return b.build([out], output_shapes=[None])


def test_a_relu_whose_rank_shape_inference_loses_behind_an_if_is_counted_at_run_time(tmp_path):
    model = rank_hiding_if_model()
    inferred = onnx.shape_inference.infer_shapes(model)
    relu_input = next(v for v in inferred.graph.value_info if v.name == "joined")
    assert not relu_input.type.tensor_type.HasField("shape")  # the case: no rank to count units on
    result = probe(save(tmp_path, model), samples=16)
    layer = result.analyses.to_json()["probe"]["layers"]["relu"]
    assert (layer["units"], layer["dead"], layer["samples"]) == (4, 2, 16)
    assert not any("number of units is unknown" in n for n in probe_notes(result))


def test_a_rank_found_too_low_at_run_time_is_a_note_not_a_count(tmp_path):
    result = probe(save(tmp_path, rank_hiding_if_model(then_rank_one=True)), samples=16)
    assert "relu" not in result.analyses.to_json()["probe"]["layers"]
    assert any("relu (its output has shape 4 at run time: no axis of units)" in n for n in probe_notes(result))
    assert not rule_findings(result, "RL501")


# ---- failures cost only the probe ------------------------------------------------------------------


def unloadable_model(after_the_relus: bool = False):
    """Negative biases (a static RL201 finding) and an op onnxruntime does not know: in front of fc1, or
    reading relu1's output (the probe then leaves it out with the rest of what no ReLU needs)."""
    model = negative_bias_mlp(40)
    if after_the_relus:
        node = helper.make_node("Mystery", ["relu1_out"], ["mystery_out"], name="mystery", domain="com.example")
        model.graph.node.append(node)
        model.graph.output.append(helper.make_tensor_value_info("mystery_out", TensorProto.FLOAT, None))
    else:
        fc1 = next(node for node in model.graph.node if node.name == "fc1")
        model.graph.node.insert(
            0, helper.make_node("Mystery", ["x"], ["mystery_out"], name="mystery", domain="com.example")
        )
        fc1.input[0] = "mystery_out"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    return model


def test_a_model_onnxruntime_cannot_load_keeps_the_static_findings(tmp_path):
    result = probe(save(tmp_path, unloadable_model()), select=("RL2", "RL5"))
    assert rule_findings(result, "RL201")
    assert not [f for f in result.findings if f.rule.startswith("RL5")]
    (note,) = probe_notes(result)
    assert "onnxruntime cannot load" in note and "static findings only" in note
    assert "probe" not in result.analyses.to_json()


def test_what_no_relu_needs_is_left_out_of_the_probe(tmp_path):
    result = probe(save(tmp_path, unloadable_model(after_the_relus=True)), select=("RL2", "RL5"))
    assert result.analyses.to_json()["probe"]["layers"]["relu1"]["dead"] == 40
    assert not probe_notes(result)


def test_a_probe_over_its_time_limit_is_stopped(tmp_path):
    result = probe(save(tmp_path, negative_bias_mlp(40)), select=("RL2", "RL5"), probe_timeout=0.001)
    assert rule_findings(result, "RL201")
    (note,) = probe_notes(result)
    assert "did not finish within 0.001 s" in note


def test_cli_exits_normally_when_the_probe_fails(tmp_path):
    path = save(tmp_path, unloadable_model())
    outcome = CliRunner().invoke(main, [str(path), "--select", "RL2,RL5", "--format", "json", "--exit-zero"])
    assert outcome.exit_code == 0, outcome.output
    model = json.loads(outcome.output)["models"][0]
    assert any(f["rule"] == "RL201" for f in model["findings"])
    assert any("probe did not run" in n["message"] for n in model["notes"])


def test_too_little_memory_skips_with_a_note(tmp_path):
    result = probe(save(tmp_path, conv_model()), probe_memory=1024**2)
    (note,) = probe_notes(result)
    assert "--probe-memory" in note


def test_no_probe_means_no_probe_rules(tmp_path):
    result = probe(save(tmp_path, negative_bias_mlp(40)), probe=False)
    assert not result.findings and "probe" not in result.analyses.to_json()


# ---- inputs --------------------------------------------------------------------------------------


def embedding_model(vocab=7):
    """int64 token ids -> Gather on a [vocab, 8] table -> MatMul+ReLU on [N, T, 8] (3-D units)."""
    b = ModelBuilder(seed=4)
    ids = b.input("ids", ["N", "T"], dtype=TensorProto.INT64)
    table = b.const(np.random.default_rng(0).standard_normal((vocab, 8)).astype(np.float32))
    emb = b.node("Gather", [table, ids])
    y = b.relu(b.linear(emb, 8, 16, name="proj"), "relu")
    return b.build([y])


def test_integer_inputs_stay_below_the_vocabulary(tmp_path):
    # onnxruntime rejects an index >= vocab, so a finished probe shows every id was in range
    result = probe(save(tmp_path, embedding_model(vocab=3)), select=("RL5",), batch=4, samples=32)
    layer = result.analyses.to_json()["probe"]["layers"]["relu"]
    assert layer["units"] == 16 and layer["samples"] == 32
    assert any("dim 1 = 32" in n.message for n in result.notes)  # T was dynamic


def test_bool_inputs_and_input_shapes(tmp_path):
    b = ModelBuilder()
    x = b.input("x", ["N", 3, "H", "W"])
    flag = b.input("flag", ["N", 1, 1, 1], dtype=TensorProto.BOOL)
    gated = b.node("Where", [flag, x, b.const(np.zeros((), np.float32))])
    y = b.relu(b.conv(gated, 3, 8, 3, name="conv"), "relu")
    path = save(tmp_path, b.build([y]))
    result = probe(path, input_shapes={"x": (1, 3, 12, 9)}, batch=4, samples=8)
    assert result.analyses.to_json()["probe"]["layers"]["relu"]["samples"] == 8
    assert not any("dim" in n.message for n in result.notes)


def test_npz_folder_and_samples_cap(tmp_path):
    path = save(tmp_path, negative_bias_mlp(40))
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savez(folder / "a.npz", x=rng.standard_normal((5, 16)).astype(np.float32))
    np.save(folder / "b.npy", rng.standard_normal((7, 16)))  # float64: cast to the input's type
    result = probe(path, data=str(folder), batch=4, samples=10)
    assert result.analyses.to_json()["probe"]["samples"] == 10
    assert result.analyses.to_json()["probe"]["layers"]["relu1"]["samples"] == 10
    (finding,) = rule_findings(result, "RL501")
    assert "real data" in finding.message and "synthetic" not in finding.message
    assert not rule_findings(result, "RL504")


def test_data_that_does_not_fit_the_model_is_a_note(tmp_path):
    path = save(tmp_path, negative_bias_mlp(40))
    np.savez(tmp_path / "bad.npz", other=np.zeros((4, 16), np.float32), more=np.zeros((4, 16), np.float32))
    (note,) = probe_notes(probe(path, data=str(tmp_path / "bad.npz")))
    assert "no array for the input(s) x" in note
    np.save(tmp_path / "wide.npy", np.zeros((4, 17), np.float32))
    (note,) = probe_notes(probe(path, data=str(tmp_path / "wide.npy")))
    assert "needs Nx16" in note
    (note,) = probe_notes(probe(path, data=str(tmp_path / "missing.npz")))
    assert "no such file" in note


# ---- RL505 -------------------------------------------------------------------------------------


def test_raw_pixels_into_the_first_conv_give_rl505(tmp_path):
    path = save(tmp_path, conv_model())
    pixels = np.random.default_rng(0).integers(0, 256, (8, 3, 10, 10)).astype(np.float32)
    np.save(tmp_path / "raw.npy", pixels)
    (finding,) = rule_findings(probe(path, data=str(tmp_path / "raw.npy")), "RL505")
    assert finding.node == "conv1" and finding.tensor == "x" and finding.units.count == 3
    np.save(tmp_path / "normalized.npy", (pixels - 127.5) / 64)
    assert not rule_findings(probe(path, data=str(tmp_path / "normalized.npy")), "RL505")


def test_a_model_that_normalizes_its_input_is_left_alone(tmp_path):
    b = ModelBuilder()
    x = b.input("x", ["N", 3, 10, 10])
    scaled = b.node("Div", [b.node("Sub", [x, b.const(np.float32(127.5))]), b.const(np.float32(64))])
    y = b.relu(b.conv(scaled, 3, 8, 3, name="conv"), "relu")
    path = save(tmp_path, b.build([y]))
    np.save(tmp_path / "raw.npy", np.full((4, 3, 10, 10), 200, np.float32))
    assert not rule_findings(probe(path, data=str(tmp_path / "raw.npy")), "RL505")


# ---- output ------------------------------------------------------------------------------------


def test_json_output_carries_the_probe(tmp_path):
    path = save(tmp_path, negative_bias_mlp(30))
    outcome = CliRunner().invoke(
        main, [str(path), "--format", "json", "--select", "RL5", "--exit-zero", "--samples", "32"]
    )
    assert outcome.exit_code == 0
    model = json.loads(outcome.output)["models"][0]
    layer = model["probe"]["layers"]["relu1"]
    assert model["probe"]["inputs"] == "synthetic" and model["probe"]["batch"] == 8
    assert len(layer["positive_rate"]) == len(layer["max"]) == len(layer["mean"]) == len(layer["std"]) == 64
    metrics = next(u["metrics"] for u in model["units"] if u["name"] == "relu1")
    assert metrics["dead"] == 30 and metrics["dead_fraction"] == pytest.approx(30 / 64, abs=1e-6)
    assert metrics["probe_samples"] == 32 and "rarely_active" in metrics and "rarely_active_fraction" in metrics


def test_models_with_local_functions_and_external_data(tmp_path):
    # A local function is inlined by the loader: the probe must write the inlined model, not copy the file.
    body = [
        helper.make_node("Gemm", ["x", "w", "b"], ["pre"], transB=1),
        helper.make_node("Relu", ["pre"], ["y"], name="inner_relu"),
    ]
    function = helper.make_function("local", "Dense", ["x", "w", "b"], ["y"], body, [helper.make_opsetid("", 17)])
    bias = np.zeros(8, np.float32)
    bias[:6] = -100
    graph = helper.make_graph(
        [helper.make_node("Dense", ["x", "w", "b"], ["y"], name="dense", domain="local")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [onnx.numpy_helper.from_array(np.ones((8, 4), np.float32), "w"), onnx.numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(
        graph, functions=[function], opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    )
    model.ir_version = 8
    (finding,) = rule_findings(probe(save(tmp_path, model, "functions.onnx")), "RL501")
    assert finding.units.count == 6
    # External weights are read through a link in the probe's temporary folder.
    folder = tmp_path / "external"
    folder.mkdir()
    onnx.save(
        negative_bias_mlp(30),
        folder / "model.onnx",
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    (finding,) = rule_findings(probe(folder / "model.onnx"), "RL501")
    assert finding.units.count == 30


def test_running_out_of_memory_costs_only_the_probe(tmp_path, monkeypatch):
    from relulint.probe import analysis

    monkeypatch.setattr(analysis, "BASELINE_MEMORY", 0)  # let the estimate pass: the child's own limit must stop it
    result = probe(save(tmp_path, negative_bias_mlp(40)), select=("RL2", "RL5"), probe_memory=64 * 1024**2)
    assert rule_findings(result, "RL201")
    (note,) = probe_notes(result)
    assert "ran out of memory" in note and "--probe-memory" in note


def test_a_crashed_probe_process_is_reported():
    import signal

    from relulint.probe.runner import Child, Progress

    child = Child()
    child.process.send_signal(signal.SIGKILL)
    outcome = child.wait(30, Progress("m.onnx"))
    assert outcome == "the probe's onnxruntime process was killed (out of memory?)"


def test_an_if_without_its_else_branch_skips_the_layer(tmp_path):
    model = if_model(True)
    if_node = next(n for n in model.graph.node if n.op_type == "If")
    kept = [a for a in if_node.attribute if a.name != "else_branch"]
    del if_node.attribute[:]
    if_node.attribute.extend(kept)
    result = probe(save(tmp_path, model))
    assert "probe" not in result.analyses.to_json()
    assert any("lacks a branch" in n for n in probe_notes(result))
