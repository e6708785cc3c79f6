"""Provable bounds on every unit's pre-activation over an input domain (the RL6xx proofs).

Given a box around the model's inputs (``--input-range``), ``run_bounds_analysis`` propagates sound
lower and upper bounds through the graph (``relulint.bounds.propagate``): interval arithmetic for every
op it models, intersected with linear bounds in the input variables where the input is small enough.
For each ReLU-family layer it then reduces the pre-activation bounds to one interval per unit (over
every other axis: batch, positions), and classifies the units:

- dead: the upper bound is <= 0 (for ThresholdedRelu, <= alpha), so the unit outputs its negative side
  for every input of the domain; for ReLU, ReLU6 and ThresholdedRelu that is a constant 0 and no gradient;
- saturated: a clipped ReLU (ReLU6) whose lower bound is at or above its ceiling, so it outputs a constant;
- always active: the lower bound is >= 0 (and under the ceiling), so the activation is the identity
  (a linear map) for every input of the domain.

Ops the propagation does not model give unbounded outputs; the result stays sound, it proves less.
Bounds hold for real-valued execution in float32: NaN and infinities produced inside the network are
outside the proof.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from relulint.findings import Note
from relulint.units import Layer

if TYPE_CHECKING:
    from relulint.bounds.propagate import Propagation
    from relulint.context import Context
    from relulint.graph import Node

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


def run_bounds_analysis(ctx: Context) -> None:
    """Store a ``BoundsResult`` in ``ctx.analyses["bounds"]``, or say in a note why there is none."""
    result, notes = ctx.cached("bounds", compute_bounds)
    ctx.notes.extend(notes)
    if result is not None:
        ctx.analyses["bounds"] = result
        for layer in ctx.layers:
            bounds = result.layers.get(layer.name)
            if bounds is not None and bounds.units:
                ctx.metric(
                    layer,
                    proven_dead=int(bounds.dead.size),
                    proven_dead_fraction=bounds.dead.size / bounds.units,
                    always_active=int(bounds.always_active.size),
                )


def cached_bounds(ctx: Context) -> BoundsResult | None:
    """The model's bounds, computed once per context (the checkpoint comparison uses them too)."""
    return ctx.cached("bounds", compute_bounds)[0]


def compute_bounds(ctx: Context) -> tuple[BoundsResult | None, list[Note]]:
    ranges = ctx.config.input_ranges
    if not ranges:
        # Said only to a user who asked for these rules by name: every default run would repeat it.
        asked = any(pattern.upper().startswith("RL6") for pattern in ctx.config.select)
        return None, [Note("info", "no --input-range given: the proof rules RL6xx stay silent")] if asked else []
    # Imported here: the op handlers take a while to import, and most runs give no --input-range.
    from relulint.bounds.propagate import input_box, propagate_bounds

    box = input_box(ctx.graph, ctx.config.input_shapes, ranges)
    notes = [Note("skipped", f"bounds: {problem}") for problem in box.problems]
    if not box.ranges:
        notes.append(Note("skipped", "no usable --input-range: the proof rules RL6xx stay silent"))
        return None, notes
    keep = {_clip_limit_inputs(ctx, layer) for layer in ctx.layers} - {""}
    per_channel = {layer.pre_activation: layer.channel_axis for layer in ctx.layers}
    propagation = propagate_bounds(ctx.graph, box, opset_of(ctx), keep, per_channel)
    result = BoundsResult(
        domain=dict(box.ranges),
        variables=propagation.domain.variables if propagation.domain is not None else 0,
        unbounded_ops=dict(propagation.unbounded_ops),
    )
    for layer in ctx.layers:
        with np.errstate(invalid="ignore"):  # NaN bounds (from NaN weights) compare as neither dead nor active
            bounds = layer_bounds(ctx, layer, propagation)
        if bounds is not None:
            result.layers[layer.name] = bounds
    if propagation.unbounded_ops:
        listed = ", ".join(
            f"{op} ×{count} ({propagation.reasons[op]})" for op, count in sorted(propagation.unbounded_ops.items())
        )
        notes.append(
            Note("info", f"bounds: outputs left unbounded (sound, but nothing is proven through them): {listed}")
        )
    return result, notes


def opset_of(ctx: Context) -> int:
    for entry in ctx.loaded.model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def layer_bounds(ctx: Context, layer: Layer, propagation: Propagation) -> LayerBounds | None:
    bound = propagation.bounds.get(layer.pre_activation)
    if layer.scope or bound is None or not bound.lo.ndim or not bound.lo.size:
        return None
    axis = layer.channel_axis if layer.channel_axis >= 0 else bound.lo.ndim + layer.channel_axis
    if not 0 <= axis < bound.lo.ndim:
        return None
    others = tuple(i for i in range(bound.lo.ndim) if i != axis)
    lower = np.min(bound.lo, axis=others) if others else bound.lo
    upper = np.max(bound.hi, axis=others) if others else bound.hi
    node = ctx.graph.nodes[layer.name]
    threshold = float(node.attr("alpha", 1.0)) if node.op == "ThresholdedRelu" else 0.0
    ceiling = _ceiling(ctx, node, propagation)
    dead = np.flatnonzero(upper <= threshold)
    dead = dead[np.argsort(upper[dead], kind="stable")]
    saturated = np.flatnonzero(lower >= ceiling) if ceiling is not None else np.arange(0)
    active = lower > threshold if node.op == "ThresholdedRelu" else lower >= 0
    if ceiling is not None:
        active &= upper <= ceiling
    always_active = np.flatnonzero(active) if node.op in IDENTITY_ON_POSITIVE else np.arange(0)
    return LayerBounds(
        layer.name,
        node.op,
        lower,
        upper,
        threshold,
        ceiling,
        dead,
        saturated,
        always_active,
        layer.pre_activation in propagation.symbolic,
    )


def _clip_limit_inputs(ctx: Context, layer: Layer) -> str:
    """A Clip's computed ceiling input, which the saturation check reads after the walk ("" otherwise)."""
    node = ctx.graph.nodes[layer.name]
    return node.inputs[2] if node.op == "Clip" and len(node.inputs) > 2 else ""


def _ceiling(ctx: Context, node: Node, propagation: Propagation) -> float | None:
    if node.op != "Clip":
        return None
    from relulint.bounds.ops import Inputs, Unsupported, clip_limits

    try:
        _, high = clip_limits(Inputs(node, ctx.graph, propagation.bounds, None, opset_of(ctx)))
    except Unsupported:
        return None  # a computed ceiling: saturation is not judged
    return high
