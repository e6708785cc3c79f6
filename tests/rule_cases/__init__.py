"""One small model per case and the findings it must give, as data: a rule's cases read like its page.

Each ``Case`` names the rule, what the model shows, a builder and the expected findings as
``(node, severity)`` pairs (an empty tuple: the rule stays silent). ``tests/test_rule_cases.py`` runs them
all; add a case here when a rule gains a behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from relulint.modelkit import ModelBuilder


@dataclass(frozen=True)
class Case:
    rule: str
    shows: str  # what the model shows, as the rule page would say it
    build: Callable[[], onnx.ModelProto]
    expected: tuple[tuple[str, str], ...]  # (node, severity) of each finding of ``rule``, in report order


def _mlp(
    widths: tuple[int, ...] = (32, 32), weight_std: float | None = None, bias: float = 0.0, variant: bool = False
) -> onnx.ModelProto:
    """x -> [Gemm(+bias) -> ReLU] per width -> Gemm head; He weights unless ``weight_std`` is given."""
    b = ModelBuilder(seed=0)
    y, fan_in = b.input("x", ["n", 16]), 16
    rng = np.random.default_rng(1)
    for i, units in enumerate(widths, start=1):
        weight = None
        if weight_std is not None:
            z = rng.standard_normal((units, fan_in))
            weight = ((z - z.mean()) / z.std() * weight_std).astype(np.float32)
        y = b.gemm(y, fan_in, units, weight=weight, bias=np.full(units, bias, np.float32), name=f"fc{i}")
        y = b.leaky_relu(y, name=f"fc{i}_relu") if variant else b.relu(y, f"fc{i}_relu")
        fan_in = units
    return b.build([b.gemm(y, fan_in, 4, name="head")])


def _zero_rows() -> onnx.ModelProto:
    b = ModelBuilder(seed=0)
    weight = b.he([32, 16], 16)
    weight[:8] = 0.0  # 8 of 32 units can never respond to their input
    y = b.relu(b.gemm(b.input("x", ["n", 16]), 16, 32, weight=weight, name="fc1"), "fc1_relu")
    return b.build([b.gemm(y, 32, 4, name="head")])


def _nonfinite() -> onnx.ModelProto:
    b = ModelBuilder(seed=0)
    weight = b.he([32, 16], 16)
    weight[3, 5] = np.nan
    y = b.relu(b.gemm(b.input("x", ["n", 16]), 16, 32, weight=weight, name="fc1"), "fc1_relu")
    return b.build([b.gemm(y, 32, 4, name="head")])


def _normalized(beta: float) -> onnx.ModelProto:
    b = ModelBuilder(seed=0)
    y = b.gemm(b.input("x", ["n", 16]), 16, 32, name="fc1")
    y = b.relu(b.batchnorm(y, 32, beta=np.full(32, beta, np.float32), name="bn1"), "fc1_relu")
    return b.build([b.gemm(y, 32, 4, name="head")])


def _relu_output() -> onnx.ModelProto:
    b = ModelBuilder(seed=0)
    y = b.relu(b.gemm(b.input("x", ["n", 16]), 16, 32, name="fc1"), "fc1_relu")
    return b.build([b.relu(b.gemm(y, 32, 4, name="head"), "head_relu")])


DEEP = tuple([16] * 9)

CASES = (
    Case("RL101", "He-initialized weights", _mlp, ()),
    Case(
        "RL101",
        "an init 100x too small",
        lambda: _mlp(weight_std=0.003),
        (("fc1_relu", "warning"), ("fc2_relu", "warning")),
    ),
    Case("RL102", "all-zero weights", lambda: _mlp(weight_std=0.0), (("fc1_relu", "error"), ("fc2_relu", "error"))),
    Case("RL103", "a NaN weight", _nonfinite, (("fc1_relu", "error"),)),
    Case("RL104", "8 of 32 weight rows all zero", _zero_rows, (("fc1_relu", "warning"),)),
    Case("RL104", "no zero row", _mlp, ()),
    Case("RL201", "biases at zero", _mlp, ()),
    Case("RL201", "every bias at -8", lambda: _mlp(bias=-8.0), (("fc1_relu", "error"), ("fc2_relu", "error"))),
    Case(
        "RL201",
        "the same on LeakyReLU",
        lambda: _mlp(bias=-8.0, variant=True),
        (("fc1_relu", "note"), ("fc2_relu", "note")),
    ),
    Case("RL202", "BatchNorm beta 0", lambda: _normalized(0.0), ()),
    Case("RL202", "BatchNorm beta -5 switches every unit off", lambda: _normalized(-5.0), (("fc1_relu", "error"),)),
    Case("RL301", "two layers", _mlp, ()),
    Case("RL301", "9 plain Gemm+ReLU layers", lambda: _mlp(DEEP), (("fc9_relu", "warning"),)),
    Case("RL401", "9 plain Gemm+ReLU layers", lambda: _mlp(DEEP), (("fc9_relu", "warning"),)),
    Case("RL401", "9 LeakyReLU layers", lambda: _mlp(DEEP, variant=True), ()),
    Case("RL402", "a hidden ReLU", _mlp, ()),
    Case("RL402", "a ReLU on the model's output", _relu_output, (("head_relu", "warning"),)),
)
