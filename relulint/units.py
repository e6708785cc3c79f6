"""The unit view: for each ReLU-family activation, the layer of units that feeds it.

A ``Layer`` names the activation, the linear op before it (Conv, ConvTranspose,
Gemm, MatMul with a constant operand), where its weight and bias come from, the
normalization and residual join in between, and how many units (channels) it has.
The static rules and the probe both work on this view. The record itself is
``relulint.layer``; ``relulint.layer_values`` reads the numbers lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypedDict

import numpy as np

from relulint.graph import Graph, Node, collector_paused
from relulint.layer import PLAIN, VARIANT, BiasTerm, Layer
from relulint.ops import (
    LINEAR_OPS,
    NORM_OPS,
    PASS_THROUGH_OPS,
    SHAPE_ONLY_OPS,
    VALUE_MOVING_OPS,
    VARIANT_OPS,
)

DECOMPOSED_LAYERNORM = "LayerNormalization (decomposed)"
MAX_WALK = 64  # steps back from an activation before giving up (cycles, hostile graphs)
MAX_JOIN_OPERANDS = 4  # operands of a residual join searched for the main branch (a Sum may have thousands)
# A unit count read from a declared shape alone (no weight backs it) above this is not believed:
# a hostile header may declare 10**12 channels, and reports allocate per unit.
MAX_DECLARED_UNITS = 1 << 24


def activation_family(graph: Graph, node: Node) -> tuple[str, str] | None:
    """(family, computed input) when the node is a ReLU-family activation, else None."""
    if node.domain not in ("", "ai.onnx") or not node.computed_inputs:
        return None
    if node.op == "Relu":
        return PLAIN, node.inputs[0]
    if node.op in VARIANT_OPS:
        return VARIANT, node.inputs[0]
    if node.op == "Clip":
        low = node.attr("min") if len(node.inputs) < 2 or not node.inputs[1] else _scalar(graph, node.inputs[1])
        if low is not None and float(low) == 0.0:
            return PLAIN, node.inputs[0]
        return None
    if node.op == "Max" and len(node.computed_inputs) == 2:
        a, b = node.computed_inputs
        for computed, other in ((a, b), (b, a)):
            value = graph.constant(other) if graph.is_constant(other) else None
            if value is not None and value.size and not graph.is_constant(computed) and np.all(value == 0):
                return PLAIN, computed
    return None


def _scalar(graph: Graph, tensor: str) -> float | None:
    value = graph.constant(tensor)
    if value is None or value.size != 1:
        return None
    return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])


def find_layers(graph: Graph) -> list[Layer]:
    # A library caller (the bench's load + graph row) may run it with the collector on: at 100,000 nodes it
    # cost 18-20 µs per node of load + graph + units against 11-13 with the collector paused.
    with collector_paused():
        return _find_layers(graph)


def _find_layers(graph: Graph) -> list[Layer]:
    # Activations exported as several ops (hard-swish as x * Clip(x + 3, 0, 6) / 6) are one variant
    # layer, named after their last op; their inner Clip is not a ReLU6 of its own.
    decomposed = {}
    inner: set[str] = set()
    for node in graph:
        if node.op in ("Mul", "Div"):
            found = decomposed_activation(graph, node)
            if found is not None:
                decomposed[node.id] = found[:2]
                inner.update(found[2])
    layers = []
    for node in graph:
        if node.id in decomposed and node.outputs and node.outputs[0]:
            op, x = decomposed[node.id]
            layers.append(replace(_layer_for(graph, node, VARIANT, x), activation_op=op))
            continue
        kind = activation_family(graph, node) if node.id not in inner else None
        if kind is None or not node.outputs or not node.outputs[0]:
            continue
        layers.append(_layer_for(graph, node, *kind))
    return layers


def decomposed_activation(graph: Graph, node: Node) -> tuple[str, str, list[str]] | None:
    """(variant, its input x, ids of its inner nodes) when ``node`` is the last op of x * gate(x):
    hard-swish x * Clip(x + 3, 0, 6) / 6 (the division also as a Mul by 1/6, before or after the product,
    or the gate as HardSigmoid(x) with alpha 1/6, beta 0.5), and SiLU x * Sigmoid(x)."""

    def scaled(tensor: str) -> tuple[Node | None, float]:
        """The producer of ``tensor`` through one Mul/Div by a constant scalar, and that factor."""
        producer = graph.producer(tensor)
        if producer is not None and producer.op in ("Mul", "Div") and len(producer.inputs) == 2:
            factor = _scalar(graph, producer.inputs[1]) if graph.is_constant(producer.inputs[1]) else None
            if factor:
                return graph.producer(producer.inputs[0]), (1.0 / factor if producer.op == "Div" else factor)
        return producer, 1.0

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-3 * abs(b)

    if node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return None
    if node.op == "Div" or (graph.is_constant(node.inputs[1]) and not graph.is_constant(node.inputs[0])):
        factor = _scalar(graph, node.inputs[1]) if graph.is_constant(node.inputs[1]) else None
        product = graph.producer(node.inputs[0])
        if not factor or product is None or product.op != "Mul" or len(product.inputs) != 2:
            return None
        outer = 1.0 / factor if node.op == "Div" else factor
    else:
        product, outer = node, 1.0
    inner = [] if product is node else [product.id]
    for x, gate in ((product.inputs[0], product.inputs[1]), (product.inputs[1], product.inputs[0])):
        if graph.is_constant(x):
            continue
        op, scale = scaled(gate)
        if op is None or not op.inputs:
            continue
        gate_node = graph.producer(gate)
        ids = [*inner, op.id] + ([gate_node.id] if gate_node is not None and gate_node is not op else [])
        total = outer * scale
        if op.op == "Sigmoid" and op.inputs[0] == x and close(total, 1.0):
            return "SiLU (decomposed)", x, ids
        if op.op == "HardSigmoid" and op.inputs[0] == x and close(total, 1.0):
            if close(float(op.attr("alpha", 0.2)), 1 / 6) and close(float(op.attr("beta", 0.5)), 0.5):
                return "HardSwish (decomposed)", x, ids
        if op.op == "Clip" and close(total, 1 / 6) and _clip_limits(graph, op) == (0.0, 6.0):
            shifted = graph.producer(op.inputs[0])
            if shifted is not None and shifted.op == "Add" and len(shifted.inputs) == 2:
                a, b = shifted.inputs
                three = b if a == x else a if b == x else None
                if three is not None and graph.is_constant(three) and _scalar(graph, three) == 3.0:
                    return "HardSwish (decomposed)", x, [*ids, shifted.id]
    return None


def _clip_limits(graph: Graph, clip: Node) -> tuple[float | None, float | None]:
    """A Clip's min and max, from its attributes (opset < 11) or constant inputs."""
    if len(clip.inputs) < 2 and clip.attr("min") is not None:
        return float(clip.attr("min")), float(clip.attr("max", np.inf))
    low = _scalar(graph, clip.inputs[1]) if len(clip.inputs) > 1 and clip.inputs[1] else None
    high = _scalar(graph, clip.inputs[2]) if len(clip.inputs) > 2 and clip.inputs[2] else None
    return low, high


@dataclass
class _Walk:
    linear: Node | None = None
    bias: list[BiasTerm] = field(default_factory=list)
    norm: Node | None = None
    norm_op: str | None = None
    # A BatchNormalization exported in training mode (training_mode=1, or its running statistics as extra
    # outputs) normalizes with the batch's own statistics, not its running ones.
    norm_training_mode: bool = False
    # (parameter, tensor id) of the normalization's inputs: gamma, beta (and BatchNorm's mean, var).
    norm_params: tuple[tuple[str, str], ...] = ()
    residual: bool = False


class _Common(TypedDict):
    """The Layer fields every layer has, whatever its linear op."""

    name: str
    activation_op: str
    family: str
    pre_activation: str
    output: str
    norm: str | None
    norm_op: str | None
    norm_training_mode: bool
    norm_params: tuple[tuple[str, str], ...]
    residual: bool
    scope: str


def _layer_for(graph: Graph, act: Node, family: str, pre_activation: str) -> Layer:
    walk = _walk_back(graph, pre_activation, _Walk(bias=[]), MAX_WALK)
    base = _Common(
        name=act.id,
        activation_op=act.op,
        family=family,
        pre_activation=pre_activation,
        output=act.outputs[0],
        norm=walk.norm.id if walk.norm else None,
        norm_op=walk.norm_op,
        norm_training_mode=walk.norm is not None and is_training_mode_batchnorm(walk.norm),
        norm_params=_norm_params(walk.norm),
        residual=walk.residual,
        scope=act.scope,
    )
    linear = walk.linear
    if linear is None:
        axis = _feature_axis(graph, pre_activation)
        return Layer(channel_axis=axis, units=_units_from_shape(graph, act.outputs[0], axis), **base)
    shape_info = _weight_layout(graph, linear)
    bias = list(walk.bias)
    own_bias = _own_bias(graph, linear)
    if own_bias:
        bias.insert(0, own_bias)
    channel_axis = 1 if linear.op in ("Conv", "ConvTranspose") else -1
    if shape_info is None:
        units = _units_from_shape(graph, act.outputs[0], channel_axis)
        return Layer(
            channel_axis=channel_axis, linear=linear.id, linear_op=linear.op, bias=tuple(bias), units=units, **base
        )
    weight, layout, group, units, fan_in, fan_out = shape_info
    if layout == "matmul_left":
        channel_axis = -2
    return Layer(
        channel_axis=channel_axis,
        linear=linear.id,
        linear_op=linear.op,
        weight=weight,
        weight_layout=layout,
        group=group,
        bias=tuple(bias),
        units=units,
        fan_in=fan_in,
        fan_out=fan_out,
        **base,
    )


def _walk_back(graph: Graph, tensor: str, walk: _Walk, budget: int) -> _Walk:
    """Follow the data back from an activation's input to the linear op that feeds it."""
    for _ in range(budget):
        node = graph.producer(tensor)
        if node is None or node.domain not in ("", "ai.onnx"):
            return walk
        op = node.op
        if op in LINEAR_OPS:
            walk.linear = node
            return walk
        if op in NORM_OPS and node.inputs:
            _set_norm(walk, node, op)
            tensor = node.inputs[0]
            continue
        if op == "Div" and is_decomposed_layernorm(graph, node):
            _set_norm(walk, node, DECOMPOSED_LAYERNORM)
            centered = graph.producer(node.inputs[0])
            assert centered is not None  # is_decomposed_layernorm checked it is a Sub
            tensor = centered.inputs[0]  # the Sub's X
            continue
        if op in PASS_THROUGH_OPS and node.computed_inputs:
            tensor = node.inputs[0]
            continue
        computed = [t for t in node.computed_inputs if not graph.is_constant(t)]
        constants = [t for t in node.computed_inputs if graph.is_constant(t)]
        if op in ("Add", "Sub") and len(computed) == 1 and len(constants) == 1:
            if op == "Sub" and node.inputs[0] != computed[0]:
                return walk  # c - x flips the sign: not a bias
            walk.bias.append(BiasTerm(constants[0], -1 if op == "Sub" else 1))
            tensor = computed[0]
            continue
        if op == "Mul" and len(computed) == 1 and len(constants) == 1:
            tensor = computed[0]  # a constant scale (e.g. a decomposed norm's gamma)
            continue
        if op in ("Add", "Sum") and len(computed) >= 2:
            walk.residual = True
            branch = _main_branch(graph, computed, budget)
            if branch is None:
                return walk
            tensor = branch
            continue
        return walk
    return walk


# Ops whose output has its features on the last axis: recurrent layers ([T, D, B, H], [D, B, H]) and
# matrix products; and ops whose output has them on axis 1 (convolutions and their normalizations).
FEATURES_LAST_OPS = {"LSTM", "GRU", "RNN", "MatMul", "Gemm"}
FEATURES_FIRST_OPS = {"Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization"}


def _feature_axis(graph: Graph, tensor: str) -> int:
    """The units' axis of an activation with no linear op found behind it: -1 behind a recurrent layer
    (through reshapes), the axis a Transpose moved the features to when that is the last one (-1) or
    axis 1; else 1 (channels, as after a convolution)."""
    node = _behind_reshapes(graph, tensor)
    if node is None:
        return 1
    if node.op in FEATURES_LAST_OPS:
        return -1
    perm = [int(axis) for axis in node.attr("perm") or []] if node.op == "Transpose" else []
    before = _behind_reshapes(graph, node.inputs[0]) if perm and node.inputs else None
    if before is None or before.op not in FEATURES_LAST_OPS | FEATURES_FIRST_OPS:
        return 1
    source = len(perm) - 1 if before.op in FEATURES_LAST_OPS else 1
    if source not in perm:
        return 1  # not a permutation: onnx refuses the model anyway
    return -1 if perm.index(source) == len(perm) - 1 else 1


def _behind_reshapes(graph: Graph, tensor: str) -> Node | None:
    """The producer of ``tensor`` once reshapes and other pass-through ops are stepped over."""
    for _ in range(MAX_WALK):
        node = graph.producer(tensor)
        if node is None or node.op not in PASS_THROUGH_OPS or not node.inputs:
            return node
        tensor = node.inputs[0]
    return None


def _set_norm(walk: _Walk, node: Node, op: str) -> None:
    # Bias terms seen so far come after the normalization: they are its shift, not the layer's bias.
    if walk.norm is None:
        walk.norm, walk.norm_op = node, op
    walk.bias = []


def _main_branch(graph: Graph, operands: list[str], budget: int) -> str | None:
    """Of a residual join's operands, the first that leads back to a linear op."""
    for operand in operands[:MAX_JOIN_OPERANDS]:
        if _walk_back(graph, operand, _Walk(bias=[]), budget // 2).linear is not None:
            # The shortcut is usually the earlier activation; the main branch reaches a linear op
            # without passing one.
            producer = graph.producer(operand)
            if producer is not None and activation_family(graph, producer) is None:
                return operand
    return None


NORM_PARAMETER_NAMES = {"BatchNormalization": ("gamma", "beta", "mean", "var")}  # inputs 1.. of the node


def _norm_params(node: Node | None) -> tuple[tuple[str, str], ...]:
    if node is None:
        return ()
    names = NORM_PARAMETER_NAMES.get(node.op, ("gamma", "beta"))
    return tuple(
        (name, node.inputs[index])
        for index, name in enumerate(names, start=1)
        if len(node.inputs) > index and node.inputs[index]
    )


def norm_parameters(graph: Graph, layer: Layer) -> dict[str, np.ndarray | None]:
    """The normalization's parameters as float64 arrays (None where a tensor is not a numeric constant)."""
    values: dict[str, np.ndarray | None] = {}
    for name, tensor in layer.norm_params:
        value = graph.constant(tensor)
        values[name] = None if value is None or value.dtype.kind not in "fiu" else np.asarray(value, np.float64)
    return values


def is_training_mode_batchnorm(node: Node) -> bool:
    if node.op != "BatchNormalization":
        return False
    extra_outputs = [output for output in node.outputs[1:] if output]
    return bool(node.attr("training_mode", 0)) or bool(extra_outputs)


def is_decomposed_layernorm(graph: Graph, div: Node) -> bool:
    """Div(Sub(X, ReduceMean(X)), Sqrt(Add(ReduceMean(Pow(.., 2)), eps)))."""
    if len(div.inputs) != 2:
        return False
    centered, spread = graph.producer(div.inputs[0]), graph.producer(div.inputs[1])
    if centered is None or spread is None or centered.op != "Sub" or spread.op != "Sqrt":
        return False
    mean = graph.producer(centered.inputs[1]) if len(centered.inputs) > 1 else None
    return mean is not None and mean.op == "ReduceMean" and mean.inputs[:1] == centered.inputs[:1]


def _own_bias(graph: Graph, linear: Node) -> BiasTerm | None:
    if linear.op in ("Conv", "ConvTranspose") and len(linear.inputs) > 2 and linear.inputs[2]:
        return BiasTerm(linear.inputs[2])
    if linear.op == "Gemm" and len(linear.inputs) > 2 and linear.inputs[2]:
        return BiasTerm(linear.inputs[2], 1, float(linear.attr("beta", 1.0)))
    return None


def _weight_layout(graph: Graph, linear: Node) -> tuple[str, str, int, int, int, int] | None:
    """(weight tensor, layout, group, units, fan_in, fan_out) when the weight is constant."""
    op = linear.op
    inputs = linear.inputs
    if len(inputs) < 2:
        return None
    if op == "MatMul":
        if graph.is_constant(inputs[1]) and not graph.is_constant(inputs[0]):
            weight, layout = inputs[1], "matmul_right"
        elif graph.is_constant(inputs[0]) and not graph.is_constant(inputs[1]):
            weight, layout = inputs[0], "matmul_left"
        else:
            return None
    elif op == "Gemm":
        if not graph.is_constant(inputs[1]):
            return None
        weight, layout = inputs[1], "gemm_transposed" if linear.attr("transB", 0) else "gemm"
    else:
        if not graph.is_constant(inputs[1]):
            return None
        weight, layout = inputs[1], op.lower()
    shape = graph.constant_shape(weight)
    if shape is None:
        return None
    shape = tuple(shape)
    group = int(linear.attr("group", 1))
    if any(d < 0 for d in shape) or group < 1:
        return None  # a malformed weight or group: the layer's weight stays unknown
    if layout in ("conv", "convtranspose") and len(shape) >= 3 and (shape[0] % group or group > shape[0]):
        return None  # Conv: M output channels in groups; ConvTranspose: C input channels in groups
    if layout == "conv" and len(shape) >= 3:
        receptive = int(np.prod(shape[2:], dtype=np.int64))
        return weight, layout, group, shape[0], shape[1] * receptive, shape[0] * receptive
    if layout == "convtranspose" and len(shape) >= 3:
        receptive = int(np.prod(shape[2:], dtype=np.int64))
        units = shape[1] * group
        return weight, layout, group, units, (shape[0] // group) * receptive, shape[0] * receptive
    matrix = tuple(d for d in shape if d != 1) if len(shape) > 2 else shape
    if len(matrix) != 2:
        return None
    rows, cols = matrix
    if layout == "gemm_transposed" or layout == "matmul_left":
        return weight, layout, 1, rows, cols, rows
    return weight, layout, 1, cols, rows, cols


def _units_from_shape(graph: Graph, tensor: str, axis: int) -> int | None:
    shape = graph.tensor_shape(tensor)
    if not shape or len(shape) <= (axis if axis >= 0 else -axis - 1):
        return None
    dim = shape[axis]
    return dim if isinstance(dim, int) and 0 < dim <= MAX_DECLARED_UNITS else None


MAX_FORWARD_WALK = 256  # tensors visited forward from one activation before the walk gives up


@dataclass(frozen=True)
class OutputPath:
    output: str  # the model output the ReLU's values reach
    final_op: str | None  # the Softmax/LogSoftmax/Sigmoid in between, if any


def subgraph_output_owners(graph: Graph) -> dict[str, str]:
    """Tensor id of a subgraph output -> the owner's output it becomes (If branches, Loop and Scan bodies)."""
    owners: dict[str, str] = {}
    for owner_id, outputs in graph.subgraph_outputs:
        owner = graph.nodes[owner_id]
        skip = 1 if owner.op == "Loop" else 0  # a Loop body's first output is the loop condition
        for index, tensor in enumerate(outputs):
            target = index - skip
            if tensor and 0 <= target < len(owner.outputs) and owner.outputs[target]:
                owners.setdefault(tensor, owner.outputs[target])
    return owners


# ---- where a layer's values go -------------------------------------------------------------------
def output_paths(
    graph: Graph, start: str, final_ops: set[str], owners: dict[str, str]
) -> tuple[list[OutputPath], bool]:
    """Model outputs a tensor's values reach unchanged (or through one final op), and whether other
    computation also consumes them."""
    outputs = set(graph.outputs)
    reached: list[OutputPath] = []
    consumed_elsewhere = False
    pending: list[tuple[str, str | None]] = [(start, None)]
    seen: set[tuple[str, str | None]] = set()
    while pending and len(seen) < MAX_FORWARD_WALK:
        tensor, final_op = pending.pop()
        if (tensor, final_op) in seen:
            continue
        seen.add((tensor, final_op))
        if tensor in outputs:
            reached.append(OutputPath(tensor, final_op))
        if tensor in owners:
            pending.append((owners[tensor], final_op))
        for consumer in graph.consumers(tensor):
            if consumer.op in SHAPE_ONLY_OPS:
                continue
            if consumer.op in VALUE_MOVING_OPS:
                pending.extend((out, final_op) for out in consumer.outputs if out)
            elif consumer.op in final_ops and final_op is None and consumer.inputs[:1] == [tensor]:
                pending.extend((out, consumer.op) for out in consumer.outputs[:1] if out)
            else:
                consumed_elsewhere = True
    return reached, consumed_elsewhere
