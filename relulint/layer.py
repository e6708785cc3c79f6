"""``Layer``: the facts the unit view (``relulint.units``) records about the units feeding one activation.

A record only: which nodes and tensors make the layer, its weight layout, bias terms, normalization and
residual join, and how many units it has. The view that finds them is ``relulint.units``; the layer's
numbers are read by ``relulint.layer_values``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from relulint.ops import FLAT_BELOW_VARIANTS

PLAIN = "plain"
VARIANT = "variant"


@dataclass(frozen=True)
class BiasTerm:
    tensor: str
    sign: int = 1  # -1 for ``x - b``
    scale: float = 1.0  # Gemm's beta


@dataclass(frozen=True)
class Layer:
    """The units feeding one ReLU-family activation."""

    name: str  # the activation's node id: the layer's name in every report
    activation_op: str
    family: str  # "plain" (Relu, ReLU6 as Clip, Max(x, 0)) or "variant"
    pre_activation: str  # tensor id entering the activation
    output: str  # tensor id leaving it
    channel_axis: int  # axis of the output that indexes units: 1 (Conv) or -1 (Gemm/MatMul)
    linear: str | None = None  # node id of the linear op, None when none was found
    linear_op: str | None = None
    weight: str | None = None  # tensor id of the constant weight; None: unknown
    weight_layout: str | None = None  # conv | convtranspose | gemm | gemm_transposed | matmul_right | matmul_left
    group: int = 1
    bias: tuple[BiasTerm, ...] = ()
    units: int | None = None
    fan_in: int | None = None
    fan_out: int | None = None
    norm: str | None = None  # node id of the normalization between linear op and activation
    norm_op: str | None = None
    # A BatchNormalization exported in training mode (training_mode=1, or its running statistics as extra
    # outputs) normalizes with the batch's own statistics, not its running ones.
    norm_training_mode: bool = False
    # (parameter, tensor id) of the normalization's inputs: gamma, beta (and BatchNorm's mean, var).
    norm_params: tuple[tuple[str, str], ...] = ()
    residual: bool = False  # a join of two computed tensors (Add/Sum) before the activation
    scope: str = ""  # "" or the subgraph path, e.g. "If_0/then"

    @property
    def keeps_gradient_below_zero(self) -> bool:
        """A variant that passes a gradient below zero (LeakyReLU, PReLU, ELU, GELU, hard-swish...): its units
        there are weak, not dead, and a negative margin is at most worth a note."""
        return self.family == VARIANT and self.activation_op not in FLAT_BELOW_VARIANTS

    def to_json(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: that deep-copies, and costs seconds on 25,000 layers.
        data = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("weight_layout", "group", "norm_params")
        }
        data["bias"] = [term.tensor for term in self.bias]
        return data
