"""What the bounds analysis proves (``relulint.bounds.analysis``): per layer, each unit's pre-activation
interval over the input domain and the units it shows dead, saturated or always active.

The types sit below ``relulint.context`` (which holds a ``BoundsResult``), so they import nothing of relulint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Ops whose output is x itself (or a fixed multiple) where x >= 0: an always-active unit is linear there.
IDENTITY_ON_POSITIVE = {"Relu", "Clip", "Max", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "ThresholdedRelu"}
# Ops that output a constant 0, with no gradient, when their input stays at or below the threshold.
ZERO_BELOW = {"Relu", "Clip", "Max", "ThresholdedRelu"}


@dataclass(frozen=True)
class LayerBounds:
    """One layer's units, each with the interval its pre-activation stays in over the whole domain."""

    layer: str
    activation_op: str
    lower: np.ndarray  # [units]
    upper: np.ndarray
    threshold: float  # the unit is on its negative (off) side at or below this: 0, or ThresholdedRelu's alpha
    ceiling: float | None  # a clipped ReLU's upper limit
    dead: np.ndarray  # unit indices, most negative upper bound first
    saturated: np.ndarray  # clipped units stuck at the ceiling
    always_active: np.ndarray
    symbolic: bool = False  # the bounds came (partly) from linear bounds in the input variables

    @property
    def units(self) -> int:
        return int(self.lower.size)

    @property
    def zero_output(self) -> bool:
        """Dead units output a constant 0 with no gradient (ReLU), rather than a small negative side."""
        return self.activation_op in ZERO_BELOW

    @property
    def bounded(self) -> bool:
        return bool(np.any(np.isfinite(self.upper)) or np.any(np.isfinite(self.lower)))

    def to_json(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "lower": self.lower,
            "upper": self.upper,
            "proven_dead": int(self.dead.size),
            "saturated": int(self.saturated.size),
            "always_active": int(self.always_active.size),
            "symbolic": self.symbolic,
        }


@dataclass
class BoundsResult:
    domain: dict[str, tuple[tuple[float, float], ...]]
    variables: int  # input elements the symbolic bounds are linear in (0: intervals only)
    layers: dict[str, LayerBounds] = field(default_factory=dict)
    unbounded_ops: dict[str, int] = field(default_factory=dict)

    @property
    def method(self) -> str:
        symbolic = any(layer.symbolic for layer in self.layers.values())
        return "interval+symbolic" if symbolic else "interval"

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": {name: [list(pair) for pair in pairs] for name, pairs in self.domain.items()},
            "method": self.method,
            "variables": self.variables,
            "unbounded_ops": dict(sorted(self.unbounded_ops.items())),
            "layers": {name: bounds.to_json() for name, bounds in self.layers.items()},
        }
