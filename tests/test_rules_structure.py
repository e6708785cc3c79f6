"""The structural rules RL301 (missing normalization), RL401 (plain-ReLU stack), RL402 (ReLU on the output)."""

from __future__ import annotations

import json
import zlib

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from relulint.chains import compute_links
from relulint.cli import main
from relulint.config import Config
from relulint.engine import analyse
from relulint.findings import Severity
from relulint.graph import build_graph
from relulint.loader import load_model
from relulint.modelkit import ModelBuilder
from relulint.units import find_layers

WIDTH = 16


# ---- model helpers --------------------------------------------------------------------------------
def mlp_chain(depth: int, norm: bool = False, variant_at: int | None = None, head: bool = True) -> onnx.ModelProto:
    """``depth`` Gemm(+BatchNorm)+ReLU layers named fc{i}_relu, then a linear head."""
    b = ModelBuilder(seed=0)
    y = b.input("x", ["n", WIDTH])
    for i in range(1, depth + 1):
        y = b.gemm(y, WIDTH, WIDTH, name=f"fc{i}")
        if norm:
            y = b.batchnorm(y, WIDTH, name=f"bn{i}")
        y = b.leaky_relu(y, name=f"fc{i}_relu") if i == variant_at else b.relu(y, f"fc{i}_relu")
    return b.build([b.gemm(y, WIDTH, 4, name="head") if head else y])


def folded_conv(b: ModelBuilder, x: str, in_ch: int, out_ch: int, name: str) -> str:
    """A Conv with a BatchNorm folded into it, as torch.onnx.export leaves it in eval mode: each channel's
    weight times gamma / sigma, the bias beta - gamma * mean / sigma (trained-looking statistics)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    gamma, beta = rng.uniform(0.2, 3.0, out_ch), rng.normal(0.0, 0.5, out_ch)
    mean, sigma = rng.normal(0.0, 1.0, out_ch), rng.uniform(0.5, 2.0, out_ch)
    weight = b.he([out_ch, in_ch, 3, 3], in_ch * 9) * (gamma / sigma)[:, None, None, None]
    bias = beta - gamma * mean / sigma
    return b.conv(x, in_ch, out_ch, weight=weight.astype(np.float32), bias=bias.astype(np.float32), name=name)


def conv_stack(
    depth: int, norm: bool = False, hidden: int = 0, stray_batchnorm: bool = False, folded: bool = False
) -> onnx.ModelProto:
    """``depth`` Conv(+BatchNorm)+ReLU layers named conv{i}_relu, a MaxPool after every second, then ``hidden``
    Gemm+ReLU layers (fc{i}_relu) and a head. ``stray_batchnorm`` adds a BatchNormalization off the chain;
    ``folded`` gives each Conv the weights and bias a folded BatchNorm leaves (else He weights, zero biases)."""
    b = ModelBuilder(seed=1)
    y = b.input("image", ["n", 3, 32, 32])
    outputs = [b.global_pool_flatten(b.batchnorm("image", 3, name="stray_bn"))] if stray_batchnorm else []
    channels = 3
    for i in range(1, depth + 1):
        if folded:
            y = folded_conv(b, y, channels, 8, name=f"conv{i}")
        else:
            y = b.conv(y, channels, 8, bias=not norm, name=f"conv{i}")
        channels = 8
        if norm:
            y = b.batchnorm(y, 8, name=f"bn{i}")
        y = b.relu(y, f"conv{i}_relu")
        if i % 2 == 0 and i < 8:
            y = b.node("MaxPool", [y], f"pool{i}", kernel_shape=[2, 2], strides=[2, 2])
    y = b.global_pool_flatten(y)
    for i in range(1, hidden + 1):
        y = b.relu(b.gemm(y, 8, 8, name=f"fc{i}"), f"fc{i}_relu")
    return b.build([b.gemm(y, 8, 10, name="classifier"), *outputs])


def save(tmp_path, model: onnx.ModelProto, name: str = "model.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return path


def lint(tmp_path, model, select=("RL3", "RL4"), **config):
    return analyse(str(save(tmp_path, model)), Config(probe=False, select=select, **config))


def findings(result, rule):
    assert result.error is None, result.error
    return [f for f in result.findings if f.rule == rule]


def options(rule: str, **values) -> dict:
    return {"rule_options": {rule: values}}


# ---- chains ---------------------------------------------------------------------------------------
def links_of(tmp_path, model):
    from relulint.context import Context

    loaded = load_model(str(save(tmp_path, model)))
    graph = build_graph(loaded)
    ctx = Context(loaded=loaded, graph=graph, layers=find_layers(graph), config=Config(probe=False))
    return compute_links(ctx)


def test_links_follow_pooling_flatten_and_a_computed_reshape(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("image", ["n", 3, 8, 8])
    y = b.relu(b.conv(x, 3, 4, name="conv1"), "conv1_relu")
    y = b.node("MaxPool", [y], "pool", kernel_shape=[2, 2], strides=[2, 2])
    y = b.node("Dropout", [y], "drop")
    # x.view(x.size(0), -1) as PyTorch exports it: the shape is computed, but it is not other data.
    batch = b.node("Gather", [b.node("Shape", [y], "shape"), b.const(np.array(0, np.int64))], "batch", axis=0)
    batch = b.node("Unsqueeze", [batch, b.const(np.array([0], np.int64))], "unsq")
    target = b.node("Concat", [batch, b.const(np.array([-1], np.int64))], "target", axis=0)
    y = b.node("Reshape", [y, target], "view")
    y = b.relu(b.gemm(y, 64, 8, name="fc"), "fc_relu")
    links = links_of(tmp_path, b.build([y]))
    assert links["fc_relu"].predecessor == "conv1_relu" and not links["fc_relu"].normalized_between
    assert links["conv1_relu"].predecessor is None


def test_links_stop_at_a_join_of_two_computed_tensors_and_note_a_norm_between(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("x", ["n", WIDTH])
    left = b.relu(b.gemm(x, WIDTH, WIDTH, name="left"), "left_relu")
    right = b.relu(b.gemm(x, WIDTH, WIDTH, name="right"), "right_relu")
    joined = b.relu(b.gemm(b.add(left, right, "join"), WIDTH, WIDTH, name="after_join"), "after_join_relu")
    normed = b.relu(b.gemm(b.batchnorm(joined, WIDTH, name="bn"), WIDTH, WIDTH, name="after_bn"), "after_bn_relu")
    links = links_of(tmp_path, b.build([normed]))
    assert links["after_join_relu"].predecessor is None
    assert links["after_bn_relu"].predecessor == "after_join_relu" and links["after_bn_relu"].normalized_between


def test_links_through_matmul_add_and_a_computed_gemm_weight_but_not_attention(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("x", ["n", WIDTH])
    y = b.relu(b.linear(x, WIDTH, WIDTH, name="mm1"), "mm1_relu")  # MatMul + Add, as PyTorch exports Linear
    y = b.relu(b.linear(y, WIDTH, WIDTH, name="mm2"), "mm2_relu")
    # Weight normalization: the weight is g * v, computed by an op the graph does not fold.
    weight = b.node("Mul", [b.const(b.he([WIDTH, WIDTH], WIDTH)), b.const(np.array(1.5, np.float32))], "weight_norm")
    y = b.relu(b.node("MatMul", [y, b.node("Transpose", [weight], "wt", perm=[1, 0])], "wn_mm"), "wn_relu")
    g = b.relu(b.node("Gemm", [b.node("Flatten", [y], "flat"), weight], "wn_gemm", transB=1), "wn_gemm_relu")
    scores = b.relu(b.node("MatMul", [y, b.node("Transpose", [y], "yt", perm=[1, 0])], "attention"), "scores_relu")
    links = links_of(tmp_path, b.build([g, scores]))
    assert links["mm2_relu"].predecessor == "mm1_relu"
    assert links["wn_relu"].predecessor is None  # MatMul of two computed tensors: no single data input
    assert links["wn_gemm_relu"].predecessor == "wn_relu"  # Gemm's data is input 0 whatever its weight
    assert links["scores_relu"].predecessor is None


def cyclic_model() -> onnx.ModelProto:
    """Four Gemm+ReLU layers in a ring, r1 -> r2 -> r3 -> r4 -> r1, and r5 branching off r2 (hostile input:
    no valid model does this)."""
    b = ModelBuilder(seed=0)
    b.input("x", [1, WIDTH])
    weight = b.const(b.he([WIDTH, WIDTH], WIDTH))
    nodes = []
    for i in range(1, 5):
        previous = f"r{4 if i == 1 else i - 1}"
        nodes.append(helper.make_node("Gemm", [previous, weight], [f"g{i}"], name=f"g{i}", transB=1))
        nodes.append(helper.make_node("Relu", [f"g{i}"], [f"r{i}"], name=f"r{i}"))
    nodes.append(helper.make_node("Gemm", ["r2", weight], ["g5"], name="g5", transB=1))
    nodes.append(helper.make_node("Relu", ["g5"], ["r5"], name="r5"))
    out = helper.make_tensor_value_info("r2", TensorProto.FLOAT, [1, WIDTH])
    graph = helper.make_graph(nodes, "ring", b.inputs, [out], b.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_structural_rules_finish_on_a_cyclic_graph(tmp_path):
    result = lint(tmp_path, cyclic_model(), select=("RL3", "RL4"), **options("RL301", min_length=2))
    assert result.error is None
    assert any("cycle" in note.message for note in result.notes)
    # The graph model cuts the edge that closes the ring (r4 into g1): the ring becomes the chain
    # r1..r4, and r5 branches off r2. Each chain is reported once, every layer in it once.
    chains = {f.node: f.evidence["chain"] for f in findings(result, "RL301")}
    assert chains == {"r4": ["r1", "r2", "r3", "r4"], "r5": ["r1", "r2", "r5"]}
    # r2, the output, also feeds g3 and g5, so it is not the model's final output.
    assert findings(result, "RL402") == []


# ---- RL301 missing normalization --------------------------------------------------------------------
def test_rl301_fires_once_at_the_end_of_an_unnormalized_chain(tmp_path):
    result = lint(tmp_path, mlp_chain(6))
    [finding] = findings(result, "RL301")
    assert finding.severity == Severity.WARNING
    assert finding.node == "fc6_relu" and finding.tensor == "fc6_relu_out"
    assert finding.evidence["length"] == 6
    assert finding.evidence["chain"] == [f"fc{i}_relu" for i in range(1, 7)]
    assert "6 consecutive" in finding.message and "'fc1_relu'" in finding.message


def test_rl301_silent_when_every_layer_is_normalized(tmp_path):
    assert findings(lint(tmp_path, mlp_chain(6, norm=True)), "RL301") == []
    assert findings(lint(tmp_path, conv_stack(10, norm=True)), "RL301") == []


@pytest.mark.parametrize(("depth", "fires"), [(3, False), (4, True)])
def test_rl301_edge_of_the_default_length(tmp_path, depth, fires):
    assert len(findings(lint(tmp_path, mlp_chain(depth)), "RL301")) == int(fires)


@pytest.mark.parametrize(("min_length", "fires"), [(7, False), (6, True)])
def test_rl301_min_length_option(tmp_path, min_length, fires):
    result = lint(tmp_path, mlp_chain(6), **options("RL301", min_length=min_length))
    assert len(findings(result, "RL301")) == int(fires)


def test_rl301_counts_conv_layers_through_pooling(tmp_path):
    [finding] = findings(lint(tmp_path, conv_stack(5)), "RL301")
    assert finding.evidence["chain"] == [f"conv{i}_relu" for i in range(1, 6)]


def test_rl301_one_normalized_layer_splits_the_chain(tmp_path):
    b = ModelBuilder(seed=0)
    y = b.input("x", ["n", WIDTH])
    for i in range(1, 8):  # 3 unnormalized, 1 normalized, 3 unnormalized: no run reaches 4
        y = b.gemm(y, WIDTH, WIDTH, name=f"fc{i}")
        if i == 4:
            y = b.batchnorm(y, WIDTH, name="bn4")
        y = b.relu(y, f"fc{i}_relu")
    assert findings(lint(tmp_path, b.build([b.gemm(y, WIDTH, 2, name="head")])), "RL301") == []


def test_rl301_a_norm_after_the_relu_splits_the_chain_too(tmp_path):
    b = ModelBuilder(seed=0)
    y = b.input("x", ["n", WIDTH])
    for i in range(1, 7):  # Linear -> ReLU -> BatchNorm after the third layer
        y = b.relu(b.gemm(y, WIDTH, WIDTH, name=f"fc{i}"), f"fc{i}_relu")
        if i == 3:
            y = b.batchnorm(y, WIDTH, name="bn_after3")
    assert findings(lint(tmp_path, b.build([b.gemm(y, WIDTH, 2, name="head")])), "RL301") == []


def resnet_without_norm(blocks: int, folded: bool = False) -> onnx.ModelProto:
    b = ModelBuilder(seed=4)

    def conv(x: str, in_ch: int, name: str) -> str:
        return folded_conv(b, x, in_ch, 8, name) if folded else b.conv(x, in_ch, 8, name=name)

    x = b.input("image", ["n", 3, 16, 16])
    y = b.relu(conv(x, 3, "stem"), "stem_relu")
    for i in range(blocks):
        y1 = b.relu(conv(y, 8, f"b{i}_conv1"), f"b{i}_relu1")
        y = b.relu(b.add(conv(y1, 8, f"b{i}_conv2"), y, f"b{i}_add"), f"b{i}_relu2")
    return b.build([b.gemm(b.global_pool_flatten(y), 8, 10, name="classifier")])


def residual_mlp_without_norm(blocks: int) -> onnx.ModelProto:
    b = ModelBuilder(seed=4)
    y = b.relu(b.gemm(b.input("x", ["n", WIDTH]), WIDTH, WIDTH, name="stem"), "stem_relu")
    for i in range(blocks):
        y1 = b.relu(b.gemm(y, WIDTH, WIDTH, name=f"b{i}_fc1"), f"b{i}_relu1")
        y = b.relu(b.add(b.gemm(y1, WIDTH, WIDTH, name=f"b{i}_fc2"), y, f"b{i}_add"), f"b{i}_relu2")
    return b.build([b.gemm(y, WIDTH, 4, name="head")])


def test_rl301_residual_connections_are_not_normalization(tmp_path):
    [finding] = findings(lint(tmp_path, residual_mlp_without_norm(2)), "RL301")
    assert finding.severity == Severity.WARNING
    assert finding.evidence["length"] == 5 and finding.evidence["residual_joins"] == 2
    assert finding.node == "b1_relu2"


def test_rl301_conv_chain_without_any_batchnorm_node_is_a_note_as_batchnorm_may_be_folded(tmp_path):
    # A conv ResNet with no BatchNormalization node: what torch.onnx.export makes of a BN ResNet in eval mode.
    [finding] = findings(lint(tmp_path, resnet_without_norm(2, folded=True)), "RL301")
    assert finding.severity == Severity.NOTE and "folded into the Conv weights" in finding.message
    assert finding.evidence["length"] == 5 and finding.evidence["batchnorm_may_be_folded"] == 5
    strict = lint(tmp_path, resnet_without_norm(2, folded=True), **options("RL301", assume_folded_batchnorm=False))
    [finding] = findings(strict, "RL301")
    assert finding.severity == Severity.WARNING and "folded" not in finding.message


def test_rl301_zero_biases_rule_folding_out_so_an_unnormalized_conv_stack_warns(tmp_path):
    # 15 plain Conv+ReLU layers whose biases are all exactly zero: no BatchNorm can have been folded into them.
    for rule, depth in (("RL301", 15), ("RL401", 15)):
        [finding] = findings(lint(tmp_path, conv_stack(depth)), rule)
        assert finding.severity == Severity.WARNING, rule
        assert finding.evidence["batchnorm_may_be_folded"] == 0 and "folded" not in finding.message


def test_rl301_channels_sharing_one_weight_scale_rule_folding_out(tmp_path):
    # Non-zero biases, but He-initialized channels that share one scale: a fold would have rescaled each.
    b = ModelBuilder(seed=2)
    y = b.input("image", ["n", 3, 16, 16])
    channels = 3
    for i in range(1, 6):
        y = b.relu(b.conv(y, channels, 16, bias=np.full(16, 0.1, np.float32), name=f"conv{i}"), f"conv{i}_relu")
        channels = 16
    model = b.build([b.gemm(b.global_pool_flatten(y), 16, 10, name="classifier")])
    [finding] = findings(lint(tmp_path, model), "RL301")
    assert finding.severity == Severity.WARNING and finding.evidence["batchnorm_may_be_folded"] == 0


@pytest.mark.parametrize(("hidden", "severity"), [(3, Severity.NOTE), (4, Severity.WARNING)])
def test_rl301_edge_of_the_run_that_cannot_hide_a_folded_batchnorm(tmp_path, hidden, severity):
    # 6 Conv layers that may hide a folded BatchNorm, then ``hidden`` Gemm layers that cannot.
    [finding] = findings(lint(tmp_path, conv_stack(6, hidden=hidden, folded=True)), "RL301")
    assert finding.evidence["length"] == 6 + hidden and finding.severity == severity


def test_rl301_one_batchnorm_node_anywhere_means_nothing_was_folded(tmp_path):
    [finding] = findings(lint(tmp_path, conv_stack(6, stray_batchnorm=True)), "RL301")
    assert finding.severity == Severity.WARNING and finding.evidence["batchnorm_may_be_folded"] == 0


def test_rl301_ignores_relu_variants_unless_asked(tmp_path):
    model = mlp_chain(7, variant_at=4)  # 3 ReLU, LeakyReLU, 3 ReLU
    assert findings(lint(tmp_path, model), "RL301") == []
    [finding] = findings(lint(tmp_path, model, **options("RL301", include_variants=True)), "RL301")
    assert finding.evidence["length"] == 7


def test_rl301_reports_each_branch_of_a_fork_once(tmp_path):
    b = ModelBuilder(seed=0)
    y = b.input("x", ["n", WIDTH])
    for i in range(1, 4):
        y = b.relu(b.gemm(y, WIDTH, WIDTH, name=f"trunk{i}"), f"trunk{i}_relu")
    heads = [b.relu(b.gemm(y, WIDTH, WIDTH, name=f"branch{k}"), f"branch{k}_relu") for k in ("a", "b")]
    result = lint(tmp_path, b.build([b.gemm(h, WIDTH, 2, name=f"head{i}") for i, h in enumerate(heads)]))
    chains = sorted(f.evidence["chain"][-1] for f in findings(result, "RL301"))
    assert chains == ["brancha_relu", "branchb_relu"]


# ---- RL401 plain-ReLU stack -------------------------------------------------------------------------
def test_rl401_fires_once_on_a_deep_plain_stack(tmp_path):
    [finding] = findings(lint(tmp_path, mlp_chain(10)), "RL401")
    assert finding.severity == Severity.WARNING
    assert finding.node == "fc10_relu"
    assert finding.evidence["length"] == 10 and finding.evidence["normalized_layers"] == 0
    assert finding.evidence["chain"][0] == "fc1_relu"
    assert "no residual" in finding.message


def test_rl401_conv_stack_without_any_batchnorm_node_is_a_note_as_batchnorm_may_be_folded(tmp_path):
    [finding] = findings(lint(tmp_path, conv_stack(10, folded=True)), "RL401")
    assert finding.severity == Severity.NOTE and finding.evidence["batchnorm_may_be_folded"] == 10
    assert "folded into the Conv weights" in finding.message
    strict = options("RL401", assume_folded_batchnorm=False)
    [finding] = findings(lint(tmp_path, conv_stack(10, folded=True), **strict), "RL401")
    assert finding.severity == Severity.WARNING and finding.evidence["chain"][-1] == "conv10_relu"
    [finding] = findings(lint(tmp_path, conv_stack(10, stray_batchnorm=True)), "RL401")
    assert finding.severity == Severity.WARNING


@pytest.mark.parametrize(("depth", "fires"), [(7, False), (8, True)])
def test_rl401_edge_of_the_default_length(tmp_path, depth, fires):
    assert len(findings(lint(tmp_path, mlp_chain(depth)), "RL401")) == int(fires)


@pytest.mark.parametrize(("min_length", "fires"), [(5, False), (4, True)])
def test_rl401_min_length_option(tmp_path, min_length, fires):
    result = lint(tmp_path, mlp_chain(4), **options("RL401", min_length=min_length))
    assert len(findings(result, "RL401")) == int(fires)


def test_rl401_silent_on_residual_network_without_normalization(tmp_path):
    # The same depth as the plain stack that fires, but every second layer ends in a residual join.
    assert findings(lint(tmp_path, resnet_without_norm(6)), "RL401") == []


def test_rl401_a_relu_variant_splits_the_stack(tmp_path):
    assert findings(lint(tmp_path, mlp_chain(15, variant_at=8)), "RL401") == []
    assert len(findings(lint(tmp_path, mlp_chain(15, variant_at=9)), "RL401")) == 1


def test_rl401_normalized_stack_is_a_note_unless_configured(tmp_path):
    [finding] = findings(lint(tmp_path, conv_stack(10, norm=True)), "RL401")
    assert finding.severity == Severity.NOTE and "every layer normalized" in finding.message
    [finding] = findings(
        lint(tmp_path, conv_stack(10, norm=True), **options("RL401", normalized_fraction=1.01)), "RL401"
    )
    assert finding.severity == Severity.WARNING


def mlp_partly_normalized(depth: int, normalized: int) -> onnx.ModelProto:
    """``depth`` Gemm+ReLU layers, the first ``normalized`` of them with a BatchNorm before the ReLU."""
    b = ModelBuilder(seed=0)
    y = b.input("x", ["n", WIDTH])
    for i in range(1, depth + 1):
        y = b.gemm(y, WIDTH, WIDTH, name=f"fc{i}")
        if i <= normalized:
            y = b.batchnorm(y, WIDTH, name=f"bn{i}")
        y = b.relu(y, f"fc{i}_relu")
    return b.build([b.gemm(y, WIDTH, 4, name="head")])


@pytest.mark.parametrize(("normalized", "severity"), [(5, Severity.WARNING), (6, Severity.NOTE)])
def test_rl401_edge_of_the_normalized_fraction(tmp_path, normalized, severity):
    # 6 of 8 layers is exactly the default 0.75.
    [finding] = findings(lint(tmp_path, mlp_partly_normalized(8, normalized)), "RL401")
    assert finding.severity == severity and finding.evidence["normalized_layers"] == normalized


def test_rl401_severity_can_be_overridden_in_the_config_file(tmp_path):
    (tmp_path / "relulint.toml").write_text('[rules.RL401]\nseverity = "error"\nmin_length = 3\n')
    path = save(tmp_path, mlp_chain(3))
    arguments = [str(path), "--no-probe", "--select", "RL401", "--format", "json"]
    result = CliRunner().invoke(main, [*arguments, "--config", str(tmp_path / "relulint.toml")])
    assert result.exit_code == 1, result.output
    [finding] = json.loads(result.output)["models"][0]["findings"]
    assert finding["rule"] == "RL401" and finding["severity"] == "error"


# ---- RL402 ReLU on the output -----------------------------------------------------------------------
def classifier(final: list[str], relu_op: str = "Relu") -> onnx.ModelProto:
    """Gemm+ReLU, Gemm head, then the ops in ``final`` (e.g. ["Relu", "Softmax"])."""
    b = ModelBuilder(seed=0)
    x = b.input("x", ["n", WIDTH])
    y = b.gemm(b.relu(b.gemm(x, WIDTH, WIDTH, name="fc1"), "fc1_relu"), WIDTH, 10, name="head")
    for op in final:
        if op == "Relu" and relu_op == "LeakyRelu":
            y = b.leaky_relu(y, name="out_act")
        elif op == "Relu" and relu_op == "Clip":
            y = b.node("Clip", [y, b.const(np.array(0, np.float32)), b.const(np.array(6, np.float32))], "out_act")
        elif op == "Relu":
            y = b.relu(y, "out_act")
        else:
            y = b.node(op, [y], op.lower())
    return b.build([y])


@pytest.mark.parametrize(
    ("final", "final_op"),
    [
        (["Relu"], None),
        (["Relu", "Softmax"], "Softmax"),
        (["Relu", "LogSoftmax"], "LogSoftmax"),
        (["Relu", "Sigmoid"], "Sigmoid"),
    ],
)
def test_rl402_fires_on_a_relu_on_the_output(tmp_path, final, final_op):
    [finding] = findings(lint(tmp_path, classifier(final)), "RL402")
    assert finding.severity == Severity.WARNING and finding.node == "out_act"
    assert finding.evidence["final_op"] == final_op and finding.evidence["linear"] == "head"
    if final_op == "Sigmoid":
        assert "0.5" in finding.message


def test_rl402_silent_on_raw_logits_and_on_softmax_of_raw_logits(tmp_path):
    assert findings(lint(tmp_path, classifier([])), "RL402") == []
    assert findings(lint(tmp_path, classifier(["Softmax"])), "RL402") == []


def test_rl402_relu6_counts_and_leaky_relu_does_not(tmp_path):
    assert len(findings(lint(tmp_path, classifier(["Relu"], relu_op="Clip")), "RL402")) == 1
    assert findings(lint(tmp_path, classifier(["Relu"], relu_op="LeakyRelu")), "RL402") == []


def test_rl402_edge_moving_ops_count_an_other_op_does_not(tmp_path):
    # Relu -> Flatten -> Softmax -> Reshape -> output: still right before the final op.
    b = ModelBuilder(seed=0)
    x = b.input("x", ["n", WIDTH])
    y = b.relu(b.gemm(x, WIDTH, 10, name="head"), "out_act")
    y = b.node("Softmax", [b.node("Flatten", [y], "flat")], "softmax")
    y = b.node("Reshape", [y, b.const(np.array([-1, 10], np.int64))], "reshape")
    assert len(findings(lint(tmp_path, b.build([y])), "RL402")) == 1
    # One op that computes with the values (a scale by a constant) in between: not the ReLU's output any more.
    b = ModelBuilder(seed=0)
    x = b.input("x", ["n", WIDTH])
    y = b.relu(b.gemm(x, WIDTH, 10, name="head"), "out_act")
    y = b.node("Softmax", [b.node("Mul", [y, b.const(np.array(2.0, np.float32))], "temperature")], "softmax")
    assert findings(lint(tmp_path, b.build([y])), "RL402") == []


def test_rl402_silent_on_a_relu_output_that_also_feeds_the_network(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("x", ["n", WIDTH])
    features = b.relu(b.gemm(x, WIDTH, WIDTH, name="fc1"), "fc1_relu")
    logits = b.gemm(features, WIDTH, 10, name="head")
    assert findings(lint(tmp_path, b.build([logits, features])), "RL402") == []


def test_rl402_finds_a_relu_in_an_if_branch_that_becomes_the_output(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("x", [1, WIDTH])
    flag = b.input("flag", [], TensorProto.BOOL)
    w = b.const(b.he([10, WIDTH], WIDTH))

    def branch(name: str, relu: bool) -> onnx.GraphProto:
        nodes = [helper.make_node("Gemm", [x, w], [f"{name}_z"], name=f"{name}_gemm", transB=1)]
        out = f"{name}_z"
        if relu:
            nodes.append(helper.make_node("Relu", [out], [f"{name}_y"], name=f"{name}_relu"))
            out = f"{name}_y"
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 10])])

    branches = {"then_branch": branch("then", True), "else_branch": branch("else", False)}
    b.nodes.append(helper.make_node("If", [flag], ["y"], name="If_0", **branches))
    [finding] = findings(lint(tmp_path, b.build(["y"], [[1, 10]])), "RL402")
    assert finding.node == "If_0/then/then_relu" and finding.tensor == "y"


# ---- through the CLI --------------------------------------------------------------------------------
def test_cli_reports_the_structural_rules(tmp_path):
    path = save(tmp_path, mlp_chain(8, head=False))  # 8 unnormalized ReLU layers, the last on the output
    result = CliRunner().invoke(
        main, [str(path), "--no-probe", "--select", "RL3", "--select", "RL4", "--format", "json"]
    )
    assert result.exit_code == 0, result.output  # warnings only, and --fail-on defaults to error
    found = json.loads(result.output)["models"][0]["findings"]
    assert sorted((f["rule"], f["node"]) for f in found) == [
        ("RL301", "fc8_relu"),
        ("RL401", "fc8_relu"),
        ("RL402", "fc8_relu"),
    ]
    assert all(f["severity"] == "warning" for f in found)
    strict = CliRunner().invoke(main, [str(path), "--no-probe", "--select", "RL4", "--fail-on", "warning"])
    assert strict.exit_code == 1
    assert f"{path}: fc8_relu [RL401]" in strict.output
