"""Healthy architectures stay silent at warning level and above under every static rule; the example
models fire what they are built for."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from relulint.config import Config
from relulint.engine import analyse
from relulint.findings import Severity
from relulint.modelkit import ModelBuilder
from relulint.rules import all_rules

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STATIC = Config(probe=False, select=("RL",))


def activation(b: ModelBuilder, x: str, kind: str, name: str) -> str:
    return b.leaky_relu(x, 0.01, name) if kind == "leaky" else b.relu(x, name)


def conv_bn(b: ModelBuilder, x: str, in_ch: int, out_ch: int, name: str, k: int = 3, stride: int = 1) -> str:
    """Conv without bias (He init) -> BatchNorm (gamma 1, beta 0, mean 0, var 1), as torchvision builds it.

    With ``b.folded`` set, the BatchNorm - with the statistics training leaves in it - is folded into the
    Conv as an eval-mode torch.onnx.export does: each channel's weight times gamma / sqrt(var + eps), the bias
    beta - gamma * mean / sqrt(var + eps), and no BatchNormalization node.
    """
    if getattr(b, "folded", False):
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        gamma, beta = rng.uniform(0.5, 1.5, out_ch), rng.normal(0.0, 0.1, out_ch)
        mean, sigma = rng.normal(0.0, 0.2, out_ch), np.sqrt(rng.uniform(0.5, 2.0, out_ch) + 1e-5)
        weight = b.he([out_ch, in_ch, k, k], in_ch * k * k) * (gamma / sigma)[:, None, None, None]
        bias = beta - gamma * mean / sigma
        return b.conv(
            x,
            in_ch,
            out_ch,
            k,
            stride,
            bias=bias.astype(np.float32),
            weight=weight.astype(np.float32),
            name=f"{name}_conv",
        )
    return b.batchnorm(b.conv(x, in_ch, out_ch, k, stride, bias=False, name=f"{name}_conv"), out_ch, name=f"{name}_bn")


def conv_bn_act(
    b: ModelBuilder, x: str, in_ch: int, out_ch: int, kind: str, name: str, k: int = 3, stride: int = 1
) -> str:
    return activation(b, conv_bn(b, x, in_ch, out_ch, name, k, stride), kind, f"{name}_act")


def basic_block(b: ModelBuilder, x: str, in_ch: int, out_ch: int, stride: int, kind: str, name: str) -> str:
    """ResNet basic block; a 1x1 projection (Conv+BN) on the shortcut when the shape changes."""
    y = conv_bn_act(b, x, in_ch, out_ch, kind, f"{name}_1", stride=stride)
    y = conv_bn(b, y, out_ch, out_ch, f"{name}_2")
    shortcut = x
    if stride != 1 or in_ch != out_ch:
        shortcut = conv_bn(b, x, in_ch, out_ch, f"{name}_down", k=1, stride=stride)
    return activation(b, b.add(y, shortcut, f"{name}_add"), kind, f"{name}_out")


def resnet(kind: str = "relu", folded: bool = False) -> onnx.ModelProto:
    """A ResNet-18-shaped network at small width: stem, 4 stages of 2 basic blocks, pool, classifier."""
    b = ModelBuilder(seed=10, name=f"resnet_{kind}{'_folded' if folded else ''}")
    b.folded = folded
    y = conv_bn_act(b, b.input("image", ["batch", 3, 32, 32]), 3, 8, kind, "stem")
    channels = 8
    for stage, width in enumerate((8, 16, 32, 64)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = basic_block(b, y, channels, width, stride, kind, f"s{stage}b{block}")
            channels = width
    logits = b.gemm(b.global_pool_flatten(y), channels, 10, name="classifier")
    return b.build([logits])


def vgg_bn(folded: bool = False) -> onnx.ModelProto:
    """VGG-11 with BatchNorm (torchvision's vgg11_bn) at small width: 8 Conv+BN+ReLU, 5 MaxPools, then a
    classifier of Linear+ReLU+Dropout twice (no normalization there, as in torchvision) and Linear."""
    b = ModelBuilder(seed=11, name=f"vgg11_bn{'_folded' if folded else ''}")
    b.folded = folded
    y = b.input("image", ["batch", 3, 32, 32])
    channels = 3
    for index, item in enumerate((8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M")):
        if item == "M":
            y = b.node("MaxPool", [y], f"pool{index}", kernel_shape=[2, 2], strides=[2, 2])
            continue
        y = conv_bn_act(b, y, channels, item, "relu", f"conv{index}")
        channels = item
    y = b.node("Flatten", [y], "flatten")
    for index in range(2):
        y = b.relu(b.gemm(y, 64, 64, name=f"fc{index}"), f"fc{index}_relu")
        y = b.node("Dropout", [y], f"dropout{index}")
    return b.build([b.gemm(y, 64, 10, name="classifier")])


CLEAN_MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "resnet_relu": resnet,
    "resnet_leaky": lambda: resnet("leaky"),
    "vgg11_bn": vgg_bn,
    # The same after an eval-mode export that folds every BatchNorm into its Conv.
    "resnet_relu_folded": lambda: resnet(folded=True),
    "vgg11_bn_folded": lambda: vgg_bn(folded=True),
}


def analysed(tmp_path: Path, model: onnx.ModelProto, config: Config = STATIC):
    path = tmp_path / f"{model.graph.name}.onnx"
    onnx.save(model, path)
    result = analyse(str(path), config)
    assert result.error is None, result.error
    return result


@pytest.mark.parametrize("name", sorted(CLEAN_MODELS))
def test_clean_models_are_valid_and_have_the_intended_structure(tmp_path, name):
    model = CLEAN_MODELS[name]()
    onnx.checker.check_model(model, full_check=True)
    result = analysed(tmp_path, model)
    units = result.layers
    assert units and all(u["linear"] is not None for u in units)
    folded = name.endswith("_folded")
    normalized = sum(u["norm_op"] == "BatchNormalization" for u in units)
    if name.startswith("resnet"):
        assert len(units) == 17 and sum(u["residual"] for u in units) == 8
        assert normalized == (0 if folded else 17)
        assert {u["family"] for u in units} == {"variant" if name == "resnet_leaky" else "plain"}
    else:
        assert len(units) == 10 and not any(u["residual"] for u in units)
        assert normalized == (0 if folded else 8)  # the two hidden classifier layers have no norm


@pytest.mark.parametrize("name", sorted(CLEAN_MODELS))
def test_clean_models_give_nothing_at_warning_level_or_above(tmp_path, name):
    result = analysed(tmp_path, CLEAN_MODELS[name]())
    ran = {rule.id for rule in all_rules() if not rule.meta.needs}
    assert {"RL301", "RL401", "RL402"} <= ran  # the structural rules are among the static rules that ran
    loud = [(f.rule, f.node, f.message) for f in result.findings if f.severity >= Severity.WARNING]
    assert loud == []
    assert not [note for note in result.notes if note.kind == "skipped"]


def test_vgg_bn_gets_a_note_for_its_plain_stack(tmp_path):
    # Ten plain-ReLU layers with no residual connection, eight of them normalized: worth a note only.
    [finding] = [f for f in analysed(tmp_path, vgg_bn()).findings if f.rule == "RL401"]
    assert finding.severity == Severity.NOTE
    assert finding.evidence["length"] == 10 and finding.evidence["normalized_layers"] == 8


def test_healthy_convnet_example_is_clean(tmp_path):
    result = analyse(str(EXAMPLES / "healthy_convnet.onnx"), STATIC)
    assert result.error is None
    assert [f for f in result.findings if f.severity >= Severity.WARNING] == []


def test_dying_mlp_example_fires_the_bias_rule_and_is_one_layer_short_of_rl301():
    result = analyse(str(EXAMPLES / "dying_mlp.onnx"), STATIC)
    assert result.error is None
    # Built for RL201: hidden biases of -4 keep most hidden units below zero.
    assert {f.node for f in result.findings if f.rule == "RL201" and f.severity >= Severity.WARNING} == {
        "fc1_relu",
        "fc2_relu",
        "fc3_relu",
    }
    # Four Gemm layers, but the last is the linear head: three Gemm+ReLU layers, one short of RL301's default.
    assert [layer["name"] for layer in result.layers] == ["fc1_relu", "fc2_relu", "fc3_relu"]
    assert not [f for f in result.findings if f.rule in ("RL301", "RL401", "RL402")]
    shorter = Config(probe=False, select=("RL301",), rule_options={"RL301": {"min_length": 3}})
    [finding] = analyse(str(EXAMPLES / "dying_mlp.onnx"), shorter).findings
    assert finding.evidence["chain"] == ["fc1_relu", "fc2_relu", "fc3_relu"]


def test_weights_of_the_clean_models_are_he_initialized(tmp_path):
    # The premise of the clean suite: He init and zero biases, so any finding is the rules' fault.
    model = resnet()
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        w = weights[conv.input[1]]
        fan_in = int(np.prod(w.shape[1:]))
        assert abs(w.std() / np.sqrt(2.0 / fan_in) - 1) < 0.35, conv.name
        assert len(conv.input) == 2  # no bias: BatchNorm's beta (zero) is the bias
