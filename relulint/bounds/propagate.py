"""Bounds for every tensor of the main graph, from a box around the inputs.

The walk visits the main graph's nodes in topological order. A node whose inputs are all known exactly
(shape arithmetic, constant chains the graph does not fold) is evaluated with onnx's reference
evaluator; any other node goes to its handler in ``relulint.bounds.ops``. A node that has no handler,
whose handler gives up, or that owns a subgraph gets unbounded outputs (their shapes from onnx shape
inference), which keeps every later bound sound.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from relulint.bounds.interval import Bound, Domain, Symbolic, exact, unbounded
from relulint.bounds.ops import HANDLERS, MAX_ELEMENTS, Inputs, Unsupported
from relulint.graph import Graph, Node
from relulint.skeleton import SHAPE_CONSTANTS_UP_TO, typed_skeleton

# Symbolic bounds carry one row per input element: worth it for small inputs (tabular data, small
# vectors), not for images, where the interval pass alone runs.
MAX_VARIABLES = 4096
SYMBOLIC_BUDGET = 8_000_000  # rows x elements of one symbolic array (64 MB of float64)
MAX_EXACT_ELEMENTS = 1_000_000  # larger all-constant nodes are not evaluated (they would be slow)
RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


@dataclass
class InputBox:
    """The analysed shape and range of each model input."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ranges: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)  # inputs given a range
    problems: list[str] = field(default_factory=list)  # why a given range could not be used


@dataclass
class Propagation:
    bounds: dict[str, Bound]
    domain: Domain | None
    unbounded_ops: Counter[str]  # op type -> nodes whose outputs were left unbounded
    reasons: dict[str, str]  # op type -> why (the first reason seen)
    symbolic: set[str] = field(default_factory=set)  # tensors that had linear bounds in the input variables


def input_box(
    graph: Graph, input_shapes: dict[str, tuple[int, ...]], ranges: dict[str, tuple[tuple[float, float], ...]]
) -> InputBox:
    box = InputBox()
    for name in graph.inputs:
        shape = _input_shape(graph, name, input_shapes)
        if shape is None:
            if name in ranges:
                box.problems.append(
                    f"input '{name}' has no fixed shape (declared {graph.tensor_shape(name)}); give it with --input-shape"
                )
            continue
        if int(np.prod(shape, dtype=np.float64)) > MAX_ELEMENTS:
            if name in ranges:
                box.problems.append(
                    f"input '{name}' of shape {list(shape)} is too large to bound (over {MAX_ELEMENTS:,} elements)"
                )
            continue
        box.shapes[name] = shape
        if name not in ranges:
            continue
        pairs = ranges[name]
        if len(pairs) > 1 and (len(shape) < 2 or shape[1] != len(pairs)):
            channels = shape[1] if len(shape) > 1 else None
            box.problems.append(
                f"--input-range of '{name}' gives {len(pairs)} channel ranges but axis 1 has {channels} channels"
            )
            continue
        box.ranges[name] = pairs
    for name in sorted(set(ranges) - set(graph.inputs)):
        known = ", ".join(graph.inputs) or "none"
        box.problems.append(f"--input-range names '{name}', which is not an input of this model (inputs: {known})")
    return box


def _input_shape(graph: Graph, name: str, given: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    if name in given:
        return tuple(given[name])
    declared = graph.tensor_shape(name)
    if declared is None:
        return None
    dims = []
    for index, dim in enumerate(declared):
        if isinstance(dim, int) and dim > 0:
            dims.append(dim)
        elif index == 0:
            dims.append(1)  # a symbolic batch: every sample has the same box, so one is enough
        else:
            return None
    return tuple(dims)


def range_arrays(shape: tuple[int, ...], pairs: tuple[tuple[float, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    if len(pairs) == 1:
        return np.full(shape, pairs[0][0], np.float64), np.full(shape, pairs[0][1], np.float64)
    lows = np.array([p[0] for p in pairs], np.float64).reshape(1, -1, *([1] * (len(shape) - 2)))
    highs = np.array([p[1] for p in pairs], np.float64).reshape(1, -1, *([1] * (len(shape) - 2)))
    return np.broadcast_to(lows, shape).copy(), np.broadcast_to(highs, shape).copy()


def seed_bounds(graph: Graph, box: InputBox) -> tuple[dict[str, Bound], Domain | None]:
    """The inputs' bounds; symbolic ones (an identity over the input variables) when there are few."""
    bounds: dict[str, Bound] = {}
    ranged = {name: range_arrays(box.shapes[name], pairs) for name, pairs in box.ranges.items()}
    finite = {name: arrays for name, arrays in ranged.items() if np.all(np.isfinite(arrays[0] + arrays[1]))}
    variables = sum(arrays[0].size for arrays in finite.values())
    domain = None
    if 0 < variables <= MAX_VARIABLES:
        domain = Domain(
            lo=np.concatenate([finite[n][0].reshape(-1) for n in finite]),
            hi=np.concatenate([finite[n][1].reshape(-1) for n in finite]),
            budget=SYMBOLIC_BUDGET,
        )
    offset = 0
    for name, shape in box.shapes.items():
        if name not in ranged:
            bounds[name] = unbounded(shape)
            continue
        lo, hi = ranged[name]
        sym = None
        if name in finite and domain is not None and domain.fits(shape):
            size = lo.size
            lower = np.zeros((variables + 1, size))
            lower[1 + offset + np.arange(size), np.arange(size)] = 1.0
            lower = lower.reshape(variables + 1, *shape)
            sym = Symbolic(lower, lower.copy())
        if name in finite:
            offset += lo.size
        bounds[name] = Bound(lo, hi, sym)
    return bounds, domain


def topological(graph: Graph) -> list[Node]:
    """Main-graph nodes, producers first (Kahn's algorithm; nodes on a cycle are left out)."""
    main = [node for node in graph.nodes.values() if node.scope == ""]
    ids = {node.id for node in main}
    waiting: dict[str, int] = {}
    users: dict[str, list[Node]] = {}
    for node in main:
        producers = {graph.producers[t] for t in node.inputs if t in graph.producers} & ids
        waiting[node.id] = len(producers)
        for producer in producers:
            users.setdefault(producer, []).append(node)
    ready = [node for node in main if waiting[node.id] == 0]
    order: list[Node] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for user in users.get(node.id, ()):
            waiting[user.id] -= 1
            if waiting[user.id] == 0:
                ready.append(user)
    return order


def propagate_bounds(
    graph: Graph, box: InputBox, opset: int, keep: set[str] | None = None, per_channel: dict[str, int] | None = None
) -> Propagation:
    """Bounds of the tensors in ``keep`` (every tensor when None); others are freed after their last use.
    The tensors of ``per_channel`` (tensor -> channel axis) are kept reduced, after their last use, to one
    interval per channel (the other axes kept with size 1): a deep chain of 4000x4000 convolutions kept
    whole held 256 MB per layer.

    Floating-point warnings are silenced: a NaN or an overflow (from NaN or huge weights) becomes an
    unbounded interval (see ``interval.normalized``), which is sound, and must not reach the user's stderr.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _propagate(graph, box, opset, keep, per_channel or {})


def _propagate(
    graph: Graph, box: InputBox, opset: int, keep: set[str] | None, per_channel: dict[str, int]
) -> Propagation:
    bounds, domain = seed_bounds(graph, box)
    result = Propagation(bounds, domain, Counter(), {})
    shapes: dict[str, tuple[int, ...]] | None = None
    order = topological(graph)
    uses = Counter(t for node in order for t in set(node.inputs) if t)
    for node in order:
        if all(graph.is_constant(t) for t in node.outputs if t):
            continue  # constants are read lazily where they are used
        inputs = Inputs(node, graph, bounds, domain, opset)
        outputs, reason = _node_bounds(inputs)
        if reason is not None:
            result.unbounded_ops[node.op] += 1
            result.reasons.setdefault(node.op, reason)
        for index, tensor in enumerate(node.outputs):
            if not tensor:
                continue
            bound = outputs[index] if index < len(outputs) else None
            if bound is None:
                if shapes is None:
                    shapes = inferred_shapes(graph, box)
                shape = shapes.get(tensor)
                if shape is None or int(np.prod(shape, dtype=np.float64)) > MAX_ELEMENTS:
                    continue  # unknown shape: consumers see no bound and leave theirs unbounded too
                bound = unbounded(shape)
            if bound.sym is not None:
                result.symbolic.add(tensor)
            bounds[tensor] = bound
        for tensor in set(node.inputs):
            if tensor:
                uses[tensor] -= 1
                if uses[tensor] == 0 and keep is not None and tensor in bounds:
                    _release(bounds, tensor, keep, per_channel)
    if keep is not None:
        for tensor in per_channel.keys() & bounds.keys() - keep:  # never consumed: reduced all the same
            bounds[tensor] = _reduced(bounds[tensor], per_channel[tensor])
    return result


def _release(bounds: dict[str, Bound], tensor: str, keep: set[str], per_channel: dict[str, int]) -> None:
    """Free a tensor's bound after its last consumer (symbolic arrays are the large part), or reduce it."""
    if tensor in keep:
        bounds[tensor].sym = None
    elif tensor in per_channel:
        bounds[tensor] = _reduced(bounds[tensor], per_channel[tensor])
    else:
        del bounds[tensor]


def _reduced(bound: Bound, axis: int) -> Bound:
    """One interval per index of ``axis`` (the other axes kept, with size 1); all of it for a bad axis."""
    ndim = bound.lo.ndim
    axis = axis + ndim if axis < 0 else axis
    others = tuple(i for i in range(ndim) if i != axis) if 0 <= axis < ndim else tuple(range(ndim))
    if not others or not bound.lo.size:
        return Bound(bound.lo, bound.hi)
    return Bound(np.min(bound.lo, axis=others, keepdims=True), np.max(bound.hi, axis=others, keepdims=True))


def _node_bounds(inputs: Inputs) -> tuple[list[Bound | None], str | None]:
    """The node's output bounds and, when some are left unbounded, why."""
    node = inputs.node
    if node.domain not in ("", "ai.onnx"):
        return [], f"custom domain '{node.domain}'"
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.proto.attribute):
        return [], "control flow (subgraphs) is not modelled"
    if node.op in RANDOM_OPS:
        return [], "random op"
    if any(inputs.bounds[t].lo.size == 0 for t in node.inputs if t in inputs.bounds):
        return [], "an empty input tensor"
    values = _exact_inputs(inputs)
    if values is not None:
        evaluated = _evaluate(inputs, values)
        if evaluated is not None:
            return evaluated, None
    handler = HANDLERS.get(node.op)
    if handler is None:
        return [], "no bound propagation for this op"
    try:
        outputs = handler(inputs)
    except Unsupported as exc:
        return [], str(exc)
    except (ValueError, IndexError) as exc:
        # numpy's complaint about shapes that do not fit: a malformed node (onnxruntime would refuse it).
        return [], f"its shapes do not fit together ({' '.join(str(exc).split())[:80]})"
    except Exception as exc:
        # A handler that trips on an unusual model must not sink the analysis: unbounded is sound.
        if os.environ.get("RELULINT_DEBUG") == "1":
            raise
        return [], f"{type(exc).__name__} while bounding"
    reason = None if all(o is not None for o in outputs[:1]) else "part of the op is not modelled"
    return outputs, reason


def _exact_inputs(inputs: Inputs) -> list[np.ndarray | None] | None:
    values: list[np.ndarray | None] = []
    total = 0
    for index, tensor in enumerate(inputs.node.inputs):
        if not tensor:
            values.append(None)
            continue
        value = inputs.value(index)
        if value is None:
            return None
        total += int(np.size(value))
        values.append(np.asarray(value))
    if total > MAX_EXACT_ELEMENTS or not any(v is not None for v in values):
        return None
    return values


def _evaluate(inputs: Inputs, values: list[np.ndarray | None]) -> list[Bound | None] | None:
    from onnx.reference import ReferenceEvaluator

    node = inputs.node
    proto = helper.make_node(
        node.op,
        [f"in{i}" if t else "" for i, t in enumerate(node.inputs)],
        [f"out{i}" for i in range(len(node.outputs))],
    )
    proto.attribute.extend(node.proto.attribute)
    try:
        evaluator = ReferenceEvaluator(proto, opsets={"": inputs.opset})
        feeds = {f"in{i}": v for i, v in enumerate(values) if v is not None}
        results = evaluator.run(None, feeds)
    except Exception:
        return None  # the handler (or unbounded outputs) takes over
    return [exact(np.asarray(r)) for r in results]


def inferred_shapes(graph: Graph, box: InputBox) -> dict[str, tuple[int, ...]]:
    """Static shapes of the main graph's tensors for the analysed input shapes (onnx shape inference)."""
    model = typed_skeleton(graph.loaded.model, SHAPE_CONSTANTS_UP_TO, box.shapes)
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return shapes
    for info in (*inferred.graph.value_info, *inferred.graph.output):
        dims = info.type.tensor_type.shape.dim if info.type.HasField("tensor_type") else []
        if info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes
