"""The bounds analysis: the RL6xx proofs' ``BoundsResult`` computed for one model (see ``relulint.bounds``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from relulint.bounds.result import IDENTITY_ON_POSITIVE, BoundsResult, LayerBounds
from relulint.findings import Note
from relulint.units import Layer

if TYPE_CHECKING:
    from relulint.bounds.propagate import Propagation
    from relulint.context import Context
    from relulint.graph import Node


def run_bounds_analysis(ctx: Context) -> None:
    """Store a ``BoundsResult`` in ``ctx.analyses.bounds``, or say in a note why there is none."""
    result, notes = ctx.cached("bounds", compute_bounds)
    ctx.notes.extend(notes)
    if result is not None:
        ctx.analyses.bounds = result
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
