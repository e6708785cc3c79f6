"""Chains of consecutive ReLU layers, for the structural rules (RL301, RL401).

Layer B *follows* layer A when A's activation output reaches B's linear op through ops that do not
mix in another computed tensor: pooling, reshaping, dropout, padding, a concat or an arithmetic op
whose other operands are constants, and normalization layers (which are remembered, because RL301
asks whether one sits between two layers). An Add or Concat of two computed tensors, an attention
MatMul or any other op ends the walk: what comes after it depends on more than A.

Each layer then has at most one predecessor, so the layers form a forest; a chain is a path in it.
Walks are bounded and remember what they saw, so a cyclic (hostile) graph cannot hang them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from relulint.graph import Graph, Node
from relulint.ops import CONSTANT_ARITHMETIC_OPS, FOLDS_BATCHNORM, MOVING_OPS, NORM_OPS
from relulint.stats import MAX_INIT_DISPERSION, MIN_UNITS_FOR_DISPERSION
from relulint.units import Layer, is_decomposed_layernorm

if TYPE_CHECKING:
    from relulint.context import Context

MAX_WALK = 64  # ops between two layers before the walk gives up
# Ops whose inputs after the first are shapes, axes, indices or sizes: data about the tensor, not other
# data, even when computed (PyTorch exports ``x.view(x.size(0), -1)`` with a Shape-Gather-Concat chain).
SHAPED_BY_LATER_INPUTS = {
    "Reshape",
    "Expand",
    "Tile",
    "Slice",
    "Pad",
    "Resize",
    "Upsample",
    "Split",
    "Squeeze",
    "Unsqueeze",
}
CACHE_KEY = "chains.links"


@dataclass(frozen=True)
class Link:
    """How a layer's linear op is fed: by which earlier layer (if any) and whether a norm sits between."""

    predecessor: str | None  # name of the layer whose activation output feeds this layer's linear op
    normalized_between: bool  # a normalization on the path from that activation to the linear op


def data_input(graph: Graph, layer: Layer) -> str | None:
    """The tensor the layer's linear op transforms (not its weight or bias), or None when ambiguous."""
    if layer.linear is None:
        return None
    linear = graph.nodes[layer.linear]
    if layer.weight_layout == "matmul_left":
        return linear.inputs[1] if len(linear.inputs) > 1 else None
    if layer.weight is not None or linear.op != "MatMul":
        # Conv, ConvTranspose and Gemm take their data as input 0 even when the weight is computed
        # (weight normalization exports ``g * v / ||v||`` as ops the graph does not fold).
        return linear.inputs[0] if linear.inputs else None
    # A MatMul of two computed tensors (attention) mixes them: it has no single data input.
    computed = [t for t in linear.inputs[:2] if t and not graph.is_constant(t)]
    return computed[0] if len(computed) == 1 else None


def link_for(graph: Graph, layer: Layer, layer_by_output: dict[str, str]) -> Link:
    """Walk back from the layer's data input to the activation of the layer that feeds it."""
    tensor = data_input(graph, layer)
    normalized = False
    seen: set[str] = set()
    for _ in range(MAX_WALK):
        if tensor is None or tensor in seen:
            break
        seen.add(tensor)
        if tensor in layer_by_output:
            return Link(layer_by_output[tensor], normalized)
        node = graph.producer(tensor)
        if node is None or node.domain not in ("", "ai.onnx"):
            break
        if node.op in NORM_OPS or (node.op == "Div" and is_decomposed_layernorm(graph, node)):
            normalized = True
            tensor = _normalized_input(graph, node)
            continue
        tensor = _single_computed_input(graph, node)
    return Link(None, normalized)


def _normalized_input(graph: Graph, node: Node) -> str | None:
    if node.op != "Div":
        return node.inputs[0] if node.inputs else None
    centered = graph.producer(node.inputs[0])  # Sub(X, ReduceMean(X)): continue from X
    return centered.inputs[0] if centered is not None and centered.inputs else None


def _single_computed_input(graph: Graph, node: Node) -> str | None:
    """The one non-constant input of an op that only moves data or applies constants, else None."""
    if node.op not in MOVING_OPS and node.op not in CONSTANT_ARITHMETIC_OPS:
        return None
    if node.op in SHAPED_BY_LATER_INPUTS:
        candidates = node.inputs[:1]
    else:
        candidates = node.computed_inputs
    computed = [t for t in candidates if t and not graph.is_constant(t)]
    if len(computed) != 1:
        return None
    if node.op == "Sub" and node.inputs[0] != computed[0]:
        return None  # c - x flips the sign: not the same units any more
    if node.op == "Div" and node.inputs[0] != computed[0]:
        return None  # c / x is not a scale of x
    return computed[0]


def compute_links(ctx: Context) -> dict[str, Link]:
    """Layer name -> its link, for every layer of the model (computed once per model)."""
    layer_by_output = {layer.output: layer.name for layer in ctx.layers}
    return {layer.name: link_for(ctx.graph, layer, layer_by_output) for layer in ctx.layers}


def links(ctx: Context) -> dict[str, Link]:
    return ctx.cached(CACHE_KEY, compute_links)


def chains(
    ctx: Context, member: Callable[[Layer, Link], bool], joins: Callable[[Layer, Link], bool]
) -> list[list[Layer]]:
    """Maximal chains of consecutive member layers, each from its first layer to its last.

    ``member(layer, link)`` says whether a layer can be in a chain at all; ``joins(layer, link)`` whether
    a member continues the chain of its predecessor (when that is a member too) instead of starting one.
    A chain ends at a member that no other member continues; a branch point gives one chain per branch.
    """
    by_name = {layer.name: layer for layer in ctx.layers}
    link_of = links(ctx)
    members = {name for name, layer in by_name.items() if member(layer, link_of[name])}

    def parent(name: str) -> str | None:
        link = link_of[name]
        if link.predecessor in members and joins(by_name[name], link):
            return link.predecessor
        return None

    continued = {p for p in (parent(name) for name in members) if p is not None}
    found = []
    for layer in ctx.layers:  # graph order, so findings come out in a stable order
        if layer.name not in members or layer.name in continued:
            continue
        chain: list[Layer] = []
        seen: set[str] = set()
        name: str | None = layer.name
        while name is not None and name not in seen:  # ``seen`` stops at a cycle of links
            seen.add(name)
            chain.append(by_name[name])
            name = parent(name)
        found.append(list(reversed(chain)))
    return found


def _no_batchnorm_node(ctx: Context) -> bool:
    return not any(node.op == "BatchNormalization" for node in ctx.graph)


def batchnorm_may_be_folded(ctx: Context, layer: Layer) -> bool:
    """True for a Conv layer with no visible normalization, in a model with no BatchNormalization node at
    all, whose weights carry the marks a fold leaves: the model may have been trained with BatchNorm that
    its export folded into the Conv.

    A fold turns the Conv's bias into ``beta - gamma * mean / sigma`` (never all zero in practice) and
    multiplies each output channel by its own ``gamma / sigma``, so the channels' weight scales differ far
    beyond sampling noise. An absent or all-zero bias, or channels that share one scale, rule folding out.
    """
    if layer.linear_op not in FOLDS_BATCHNORM or layer.norm is not None:
        return False
    if not ctx.cached("chains.no_batchnorm_node", _no_batchnorm_node):
        return False
    bias = ctx.bias(layer)
    if bias is not None and not np.any(bias):
        return False  # no bias, or an all-zero one: nothing was folded into it
    stats = ctx.weight_stats(layer)
    if stats is not None and stats.units >= MIN_UNITS_FOR_DISPERSION and math.isfinite(stats.scale_dispersion):
        return stats.scale_dispersion > MAX_INIT_DISPERSION
    return True  # too few channels to tell: folding stays possible


def longest_run(flags: list[bool]) -> int:
    """Length of the longest run of consecutive True values (e.g. over a chain's layers)."""
    best = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        best = max(best, current)
    return best


FOLDED_HINT = (
    "the model has no BatchNormalization node at all and these Convs have non-zero biases and per-channel "
    "weight scales as a fold leaves them: if it was exported for inference, BatchNorm may have "
    "been folded into the Conv weights (torch.onnx.export does this in eval mode; recent versions keep it "
    "with training=torch.onnx.TrainingMode.PRESERVE)"
)
