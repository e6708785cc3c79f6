"""Instrumentation: per-channel reductions of every ReLU-family output, as small extra graph outputs.

For each layer the model gains a handful of nodes that reduce the activation's *output*
(dead <=> the output is never > 0), so onnxruntime still fuses Conv+ReLU:

* 4-D (and other rank >= 3) outputs with channels on axis 1 are *pooled*: GlobalMaxPool,
  GlobalAveragePool of the output, of its square and of a 0/1 positive indicator. These
  ops run on onnxruntime's blocked (NCHWc) conv layout, so no activation is copied out of
  it; the indicator is a depthwise 1x1 Conv by 2^127 clipped to [0, 1], which onnxruntime
  also runs blocked. Results are [N, C, 1, 1] per-sample means.
* everything else is *reduced*: the output is viewed as [A, C, B] and ReduceMax/ReduceSum/
  ReduceSumSquare and a count of positives give [C] per batch.

Order matters for memory. onnxruntime (priority-based order, lowest node index first)
runs the reductions of a layer right after the layer when the reductions are appended
in reverse layer order, and within a layer in the order written here; then each
activation is freed as in a plain run and only one transient of its size exists.

Layers inside an If branch are reduced inside the branch; the results leave through new
outputs of the branch (the other branch outputs empty tensors) and of the If node.
Layers inside Loop or Scan bodies are not probed.
"""

from __future__ import annotations

import bisect
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from relulint.external import CheckedFile
from relulint.findings import Note
from relulint.graph import Graph
from relulint.loader import iter_graphs
from relulint.probe.protocol import POOLED, POOLED_STATS, REDUCED, STATS, LayerTap
from relulint.probe.shapes import TensorInfo
from relulint.units import LINEAR_OPS, Layer

POSITIVE_SCALE = 2.0**127  # x * 2^127 >= 1 for every positive normal float32, and > 0 for denormals
BLOCK = 8  # channel multiple that onnxruntime's blocked conv layout needs (8 on AVX2, 16 on AVX-512)
OTHER_BRANCH = {"then": "else_branch", "else": "then_branch"}
BRANCH_ATTRIBUTE = {"then": "then_branch", "else": "else_branch"}


@dataclass
class Additions:
    """New nodes, outputs and initializers of one (sub)graph."""

    graph: onnx.GraphProto
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)


@dataclass
class Instrumentation:
    taps: list[LayerTap] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (layer, why it is not probed)
    graphs: dict[int, Additions] = field(default_factory=dict)  # id(graph proto) -> additions
    node_outputs: list[tuple[onnx.NodeProto, list[str]]] = field(default_factory=list)  # If nodes' new outputs

    def additions(self, graph: onnx.GraphProto) -> Additions:
        if id(graph) not in self.graphs:
            self.graphs[id(graph)] = Additions(graph)
        return self.graphs[id(graph)]


class Names:
    """Fresh tensor and node names that collide with nothing in the model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        taken: set[str] = set()
        for graph in iter_graphs(model.graph):
            taken.update(t.name for t in graph.initializer)
            taken.update(v.name for v in (*graph.input, *graph.output, *graph.value_info))
            for node in graph.node:
                taken.add(node.name)
                taken.update(node.output)
        self.prefix = free_prefix("relulint_probe", taken)
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{self.prefix}/{self.count}/{stem}"


def free_prefix(stem: str, taken: set[str]) -> str:
    """A short prefix P such that no name in ``taken`` starts with ``P/`` (fresh names are ``P/N/...``).

    Candidates are ``stem``, ``stem_1``, ``stem_2``...: none of ``stem/``, ``stem_1/``... is a prefix of
    another, so each taken name rules out at most one, and one of the first len(taken) + 1 is free. Each is
    checked by bisection in the sorted names: O(n log n) in all, where growing the stem by one underscore
    per clash took 380 s on a name followed by 1.5 million underscores (and made every fresh name that long).
    """
    ordered = sorted(taken)
    count = 0
    while True:
        candidate = stem if count == 0 else f"{stem}_{count}"
        marker = candidate + "/"
        at = bisect.bisect_left(ordered, marker)
        if at == len(ordered) or not ordered[at].startswith(marker):
            return candidate
        count += 1


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


# Small [rows, units] activations (Gemm/MatMul outputs) are concatenated and reduced together:
# a model with thousands of small layers would otherwise gain thousands of nodes, and onnxruntime's
# session creation grows with every node. The concatenation keeps a group's activations alive until
# its last layer, so groups are capped in bytes.
SMALL_LAYER = 1024**2  # bytes of one layer's activation at the probe's batch
GROUP_BYTES = 16 * 1024**2


def plan(graph: Graph, layers: list[Layer], shapes: dict[str, TensorInfo], pooled: bool = True) -> Instrumentation:
    """Decide each layer's reductions and the graph changes that produce them. ``pooled`` False: the
    inputs' spatial sizes vary between batches, so no tap may count positions from the inferred shapes."""
    model = graph.loaded.model
    names = Names(model)
    opset = default_opset(model)
    result = Instrumentation()
    probed: list[tuple[Layer, TensorInfo, int]] = []
    for layer in layers:
        why = _unprobeable(graph, layer)
        info = shapes.get(layer.output) or TensorInfo(0, None)
        units = layer.units or _units(info, layer.channel_axis)
        if not why and not units and not _countable_at_run_time(info, layer.channel_axis, opset):
            why = "its number of units is unknown"
        if why:
            result.skipped.append((layer.name, why))
        else:
            probed.append((layer, info, units or 0))  # 0: counted from the tensor the child sees
    groups = _groups(probed)
    taps: dict[str, LayerTap] = {}
    # Reverse layer order: see the module docstring. A group is written where its last layer is.
    for layer, info, units in reversed(probed):
        group = groups.get(layer.name)
        if group is not None:
            if group[-1][0] is layer:
                taps.update(_add_group(result.additions(graph.loaded.model.graph), names, group, opset))
            continue
        additions = result.additions(_graph_of(graph, layer.scope))
        local = layer.output[len(layer.scope) + 1 :] if layer.scope else layer.output
        per_sample = _spatial_size(info) if layer.channel_axis == 1 and pooled and units else None
        kind, outputs = _add_reductions(additions, names, local, layer.channel_axis, units, info, per_sample, opset)
        exported = _export(graph, result, names, layer.scope, outputs)
        min_rank = 2 if kind == REDUCED and info.rank is None else 0
        taps[layer.name] = LayerTap(layer.name, kind, tuple(exported), units, per_sample or 0, min_rank=min_rank)
    result.taps = [taps[layer.name] for layer, _, _ in probed]
    return result


def _groups(probed: list[tuple[Layer, TensorInfo, int]]) -> dict[str, list[tuple[Layer, TensorInfo, int]]]:
    """Layer name -> its group, for small float [rows, units] main-graph activations with the same rows."""
    groups: dict[str, list[tuple[Layer, TensorInfo, int]]] = {}
    open_groups: dict[int, tuple[list[tuple[Layer, TensorInfo, int]], int]] = {}  # rows -> (group, bytes)
    for layer, info, units in probed:
        size = info.nbytes()
        if (
            layer.scope
            or info.elem_type != TensorProto.FLOAT
            or info.rank != 2
            or layer.channel_axis not in (1, -1)
            or size is None
            or size > SMALL_LAYER
            or not units
        ):
            continue
        rows = info.shape[0]
        group, total = open_groups.get(rows, ([], 0))
        if total + size > GROUP_BYTES:
            group, total = [], 0
        group.append((layer, info, units))
        open_groups[rows] = (group, total + size)
        groups[layer.name] = group
    return {name: group for name, group in groups.items() if len(group) > 1}


def _add_group(
    additions: Additions, names: Names, group: list[tuple[Layer, TensorInfo, int]], opset: int
) -> dict[str, LayerTap]:
    """One Concat of the group's activations along the units, reduced like a single layer."""
    joined = names.fresh("joined")
    width = sum(units for _, _, units in group)
    additions.nodes.append(
        helper.make_node(
            "Concat", [layer.output for layer, _, _ in group], [joined], name=names.fresh("Concat"), axis=1
        )
    )
    info = TensorInfo(TensorProto.FLOAT, (None, width))
    kind, outputs = _add_reductions(additions, names, joined, -1, width, info, None, opset)
    taps, offset = {}, 0
    for layer, _, units in group:
        taps[layer.name] = LayerTap(layer.name, kind, tuple(outputs), units, offset=offset, width=width)
        offset += units
    return taps


def _unprobeable(graph: Graph, layer: Layer) -> str | None:
    scope = layer.scope
    while scope:
        owner_id, _, branch = scope.rpartition("/")
        owner = graph.nodes.get(owner_id)
        if owner is None or owner.op != "If" or branch not in BRANCH_ATTRIBUTE:
            return f"it sits inside a {owner.op if owner else 'sub'} graph body, which the probe does not instrument"
        present = {a.name for a in owner.proto.attribute if a.type == onnx.AttributeProto.GRAPH}
        if not set(BRANCH_ATTRIBUTE.values()) <= present:
            return f"its If node '{owner.id}' lacks a branch"
        scope = owner.scope
    return None


def _countable_at_run_time(info: TensorInfo, axis: int, opset: int) -> bool:
    """Units whose count shape inference does not give are counted on the tensor the child sees, on the
    last axis (a ReLU behind an LSTM and a reshape) or on axis 1 of a tensor of rank >= 2. An unknown rank
    (shape inference gives up behind an If whose branches squeeze conditionally, as torch exports an
    LSTM cell's state) is read at run time too: the tap's min_rank makes the child check it (from opset 11,
    where Unsqueeze takes the negative axes that widen a tensor of unknown rank)."""
    if info.rank is None and axis == 1:
        return opset >= 11
    return axis == -1 or (axis == 1 and info.rank is not None and info.rank >= 2)


def _units(info: TensorInfo, axis: int) -> int | None:
    if info.shape is None or not -len(info.shape) <= axis < len(info.shape):
        return None
    return info.shape[axis]


def _spatial_size(info: TensorInfo) -> int | None:
    """Values per unit in one sample of an [N, C, ...] tensor of rank >= 3, when every dim is known."""
    if info.shape is None or len(info.shape) < 3 or any(d is None for d in info.shape[2:]):
        return None
    return int(np.prod(info.shape[2:], dtype=np.int64))


def _graph_of(graph: Graph, scope: str) -> onnx.GraphProto:
    if not scope:
        return graph.loaded.model.graph
    owner_id, _, branch = scope.rpartition("/")
    owner = graph.nodes[owner_id]
    return _attribute_graph(owner.proto, BRANCH_ATTRIBUTE[branch])


def _attribute_graph(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.g
    raise KeyError(name)


def _add_reductions(
    additions: Additions,
    names: Names,
    tensor: str,
    axis: int,
    units: int,
    info: TensorInfo,
    per_sample: int | None,
    opset: int,
) -> tuple[str, list[str]]:
    """Append one layer's reduction nodes; return the tap kind and its output names (STATS order)."""
    nodes, inits = additions.nodes, additions.initializers
    kind = POOLED if per_sample else REDUCED
    stats = POOLED_STATS if kind == POOLED else STATS
    outputs = {stat: names.fresh(stat) for stat in stats}
    value = tensor
    if info.elem_type not in (0, TensorProto.FLOAT):  # 0: unknown, taken to be float
        value = names.fresh("float")
        nodes.append(helper.make_node("Cast", [tensor], [value], name=names.fresh("Cast"), to=TensorProto.FLOAT))
    if kind == POOLED:
        _pooled(nodes, inits, names, value, units, len(info.shape), opset, outputs)
    else:
        nodes.append(helper.make_node("Shape", [tensor], [outputs["shape"]], name=names.fresh("Shape")))
        if axis == 1 and not units and info.rank is None:
            value = _at_least_rank_two(nodes, inits, names, value, opset)
        _reduced(nodes, inits, names, value, axis, units, opset, outputs)
    for stat in stats:
        elem = TensorProto.INT64 if stat == "shape" else TensorProto.FLOAT
        additions.outputs.append(helper.make_tensor_value_info(outputs[stat], elem, None))
    return kind, [outputs[stat] for stat in stats]


def _pooled(nodes, inits, names: Names, x: str, units: int, rank: int, opset: int, out: dict[str, str]) -> None:
    # Written so that the square's transient is freed before the indicator's is made.
    square = names.fresh("square")
    nodes.append(helper.make_node("Mul", [x, x], [square], name=names.fresh("Mul")))
    nodes.append(helper.make_node("GlobalMaxPool", [x], [out["max"]], name=names.fresh("GlobalMaxPool")))
    nodes.append(helper.make_node("GlobalAveragePool", [x], [out["sum"]], name=names.fresh("GlobalAveragePool")))
    indicator = names.fresh("positive")
    if units % BLOCK == 0:
        weight = names.fresh("scale")
        inits.append(
            helper.make_tensor(
                weight, TensorProto.FLOAT, [units] + [1] * (rank - 1), np.full(units, POSITIVE_SCALE, np.float32)
            )
        )
        scaled = names.fresh("scaled")
        nodes.append(
            helper.make_node(
                "Conv", [x, weight], [scaled], name=names.fresh("Conv"), group=units, kernel_shape=[1] * (rank - 2)
            )
        )
        nodes.append(_clip(names, inits, scaled, indicator, opset))
    else:
        nodes.append(
            helper.make_node(
                "HardSigmoid", [x], [indicator], name=names.fresh("HardSigmoid"), alpha=POSITIVE_SCALE, beta=0.0
            )
        )
    nodes.append(
        helper.make_node("GlobalAveragePool", [indicator], [out["positive"]], name=names.fresh("GlobalAveragePool"))
    )
    nodes.append(helper.make_node("GlobalAveragePool", [square], [out["sumsq"]], name=names.fresh("GlobalAveragePool")))


def _clip(names: Names, inits, x: str, y: str, opset: int) -> onnx.NodeProto:
    if opset < 11:
        return helper.make_node("Clip", [x], [y], name=names.fresh("Clip"), min=0.0, max=1.0)
    low, high = names.fresh("zero"), names.fresh("one")
    inits.append(helper.make_tensor(low, TensorProto.FLOAT, [], [0.0]))
    inits.append(helper.make_tensor(high, TensorProto.FLOAT, [], [1.0]))
    return helper.make_node("Clip", [x, low, high], [y], name=names.fresh("Clip"))


def _at_least_rank_two(nodes, inits, names: Names, x: str, opset: int) -> str:
    """``x`` with two trailing axes of size 1, so that the [0, 0, -1] view below is valid whatever the rank
    (a rank >= 2 tensor keeps its values per unit; a lower rank is told by its shape and not counted)."""
    wider = names.fresh("wider")
    if opset >= 13:
        axes = names.fresh("axes")
        inits.append(helper.make_tensor(axes, TensorProto.INT64, [2], [-1, -2]))
        nodes.append(helper.make_node("Unsqueeze", [x, axes], [wider], name=names.fresh("Unsqueeze")))
    else:  # opset 11-12 (_countable_at_run_time)
        nodes.append(helper.make_node("Unsqueeze", [x], [wider], name=names.fresh("Unsqueeze"), axes=[-1, -2]))
    return wider


def _reduced(nodes, inits, names: Names, x: str, axis: int, units: int, opset: int, out: dict[str, str]) -> None:
    view = names.fresh("view")
    target = names.fresh("target")
    if axis == -2:  # [..., C, Q] -> [-1, C, Q]: Q is read from the tensor at run time
        head, shape, last = names.fresh("head"), names.fresh("shape"), names.fresh("last")
        inits.append(helper.make_tensor(head, TensorProto.INT64, [2], [-1, units]))
        nodes.append(helper.make_node("Shape", [x], [shape], name=names.fresh("Shape")))
        nodes.append(_slice_last(names, inits, shape, last, opset))
        nodes.append(helper.make_node("Concat", [head, last], [target], name=names.fresh("Concat"), axis=0))
    elif axis == -1 and not units:  # [..., C] -> [-1, C, 1]: C is read from the tensor at run time
        head, tail, shape, last = names.fresh("head"), names.fresh("tail"), names.fresh("shape"), names.fresh("last")
        inits.append(helper.make_tensor(head, TensorProto.INT64, [1], [-1]))
        inits.append(helper.make_tensor(tail, TensorProto.INT64, [1], [1]))
        nodes.append(helper.make_node("Shape", [x], [shape], name=names.fresh("Shape")))
        nodes.append(_slice_last(names, inits, shape, last, opset))
        nodes.append(helper.make_node("Concat", [head, last, tail], [target], name=names.fresh("Concat"), axis=0))
    else:  # with units 0 (on axis 1), Reshape's 0 copies the dim: the count comes from the tensor
        dims = [0, units, -1] if axis == 1 else [-1, units, 1]
        inits.append(helper.make_tensor(target, TensorProto.INT64, [3], dims))
    nodes.append(helper.make_node("Reshape", [x, target], [view], name=names.fresh("Reshape")))
    positive, flags = names.fresh("positive"), names.fresh("flags")
    zero = names.fresh("zero")
    inits.append(helper.make_tensor(zero, TensorProto.FLOAT, [], [0.0]))
    nodes.append(helper.make_node("Greater", [view, zero], [flags], name=names.fresh("Greater")))
    nodes.append(helper.make_node("Cast", [flags], [positive], name=names.fresh("Cast"), to=TensorProto.FLOAT))
    for op, source, stat in (
        ("ReduceMax", view, "max"),
        ("ReduceSum", view, "sum"),
        ("ReduceSumSquare", view, "sumsq"),
        ("ReduceSum", positive, "positive"),
    ):
        nodes.append(_reduce(names, inits, op, source, out[stat], opset))


def _reduce(names: Names, inits, op: str, x: str, y: str, opset: int) -> onnx.NodeProto:
    """Reduce over axes 0 and 2 of an [A, C, B] view (axes became an input in opset 13 or 18)."""
    axes_as_input = opset >= 13 if op == "ReduceSum" else opset >= 18
    if axes_as_input:
        axes = names.fresh("axes")
        inits.append(helper.make_tensor(axes, TensorProto.INT64, [2], [0, 2]))
        return helper.make_node(op, [x, axes], [y], name=names.fresh(op), keepdims=0)
    return helper.make_node(op, [x], [y], name=names.fresh(op), keepdims=0, axes=[0, 2])


def _slice_last(names: Names, inits, x: str, y: str, opset: int) -> onnx.NodeProto:
    if opset < 10:
        return helper.make_node("Slice", [x], [y], name=names.fresh("Slice"), starts=[-1], ends=[2**62], axes=[0])
    starts, ends = names.fresh("starts"), names.fresh("ends")
    inits.append(helper.make_tensor(starts, TensorProto.INT64, [1], [-1]))
    inits.append(helper.make_tensor(ends, TensorProto.INT64, [1], [2**62]))
    return helper.make_node("Slice", [x, starts, ends], [y], name=names.fresh("Slice"))


def _export(graph: Graph, result: Instrumentation, names: Names, scope: str, tensors: list[str]) -> list[str]:
    """Pass subgraph tensors out through the enclosing If nodes; return their main-graph names."""
    if not scope:
        return tensors
    owner_id, _, branch = scope.rpartition("/")
    owner = graph.nodes[owner_id]
    other = result.additions(_attribute_graph(owner.proto, OTHER_BRANCH[branch]))
    placeholders = []
    for tensor in tensors:
        elem = TensorProto.INT64 if tensor.endswith("/shape") else TensorProto.FLOAT
        empty = names.fresh("not_run")
        other.nodes.append(
            helper.make_node(
                "Constant", [], [empty], name=names.fresh("Constant"), value=helper.make_tensor(empty, elem, [0], [])
            )
        )
        other.outputs.append(helper.make_tensor_value_info(empty, elem, None))
        placeholders.append(empty)
    outer = [names.fresh(tensor.rsplit("/", 1)[-1]) for tensor in tensors]
    result.node_outputs.append((owner.proto, outer))
    # The If's new outputs become outputs of the graph around it (and so on outwards).
    result.additions(_graph_of(graph, owner.scope)).outputs.extend(
        helper.make_tensor_value_info(name, TensorProto.INT64 if name.endswith("/shape") else TensorProto.FLOAT, None)
        for name in outer
    )
    return _export(graph, result, names, owner.scope, outer)


# ---- writing the instrumented model ------------------------------------------------------------


class LinkRefused(Exception):
    """The instrumented model's weights cannot be made readable beside it without a large copy."""


# A weight file that cannot be hard-linked (the temporary folder is on another file system) is copied,
# with a note, only up to this size; a larger one skips the probe instead of silently writing gigabytes.
COPY_AT_MOST = 256 * 1024**2


def write_model(
    graph: Graph,
    instrumentation: Instrumentation,
    folder: Path,
    notes: list[Note] | None = None,
    keep: frozenset[str] = frozenset(),
) -> Path:
    """The instrumented model as a file in ``folder`` (onnxruntime loads a path faster than bytes).

    Only the graph is written: weights stay where they are. External data files, and the model
    file itself when the loader left its large weights in it (``loaded.inline_location``), are
    hard-linked beside the new file. onnxruntime then reads those weights as external data,
    which measured faster (session creation 0.25 s instead of 0.33 s on the ResNet-50 bench
    model) and lighter than parsing them inline from a copy of the file. A copy, when one is
    needed, is said in ``notes``; ``LinkRefused`` when it would be too large.
    """
    loaded = graph.loaded
    files = loaded.external_files  # only what the loader's gate checked; nothing else is ever linked
    target = folder / _free_name("instrumented.onnx", set(files))
    _link_external_data(files, folder, notes if notes is not None else [])
    main = loaded.model.graph
    prune = linear_after_last_layer(graph, instrumentation)
    with _applied(loaded.model, instrumentation):
        data = loaded.model.SerializeToString()
        taps = instrumentation.graphs.get(id(main))
        # ``keep``: model outputs the child reads too (a recurrent state carried to the next chunk)
        needed = {value.name for value in taps.outputs} | keep if taps is not None else set()
        kept = needed_nodes(main, needed) if prune and needed else None
    if kept is not None:
        data = _pruned(data, kept, needed)
    target.write_bytes(data)
    return target


def linear_after_last_layer(graph: Graph, instrumentation: Instrumentation) -> bool:
    """Whether a linear op follows the last probed activation of the main graph in node order (which is
    topological): only then can leaving out what the probe does not need save real work. A cheap test
    from the end of the graph, where the full walk costs a pass over every node (20,000 in a bench model)."""
    layers = [graph.nodes[tap.layer] for tap in instrumentation.taps]
    if any(layer.scope for layer in layers):
        return False  # a layer in a subgraph: the If that holds it and what it reads are needed, keep it all
    activations = {layer.outputs[0] for layer in layers}
    for node in reversed(graph.loaded.model.graph.node):
        if activations.intersection(node.output):
            return False
        if node.op_type in LINEAR_OPS:
            return True
    return False


def needed_nodes(graph: onnx.GraphProto, outputs: set[str]) -> list[int] | None:
    """Indices of the nodes the ``outputs`` depend on, in graph order; None when pruning the others saves no
    real work (none of them is a linear op).

    onnxruntime runs every node of a model, whatever outputs a run asks for. The probe needs only what its
    reductions read: an OPT-125M shape's lm head (a third of its multiply-adds) and everything else after the
    last ReLU is left out of the instrumented model, and onnxruntime then drops the weights only they use.
    """
    producers = {tensor: index for index, node in enumerate(graph.node) for tensor in node.output if tensor}
    needed, pending, kept = set(outputs), list(outputs), set()
    while pending:
        index = producers.get(pending.pop())
        if index is None or index in kept:
            continue
        kept.add(index)
        node = graph.node[index]
        for tensor in (*node.input, *_names_used_inside(node)):
            if tensor and tensor not in needed:
                needed.add(tensor)
                pending.append(tensor)
    left_out = [node for index, node in enumerate(graph.node) if index not in kept]
    if not any(node.op_type in LINEAR_OPS for node in left_out):
        return None
    return sorted(kept)


def _names_used_inside(node: onnx.NodeProto) -> set[str]:
    """Every tensor name the node's subgraphs read (outer-scope values among them), conservatively."""
    names: set[str] = set()
    for attribute in node.attribute:
        bodies = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for body in bodies:
            for graph in iter_graphs(body):
                for inner in graph.node:
                    names.update(inner.input)
    return names


def _pruned(data: bytes, kept: list[int], outputs: set[str]) -> bytes:
    """The serialized model with only the ``kept`` main-graph nodes and the probe's outputs. Done on a parsed
    copy: the loaded model's nodes are shared with the graph the static rules are reading."""
    model = onnx.ModelProto()
    model.ParseFromString(data)
    graph = model.graph
    nodes = [graph.node[index] for index in kept]
    values = [value for value in graph.output if value.name in outputs]
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    kept_outputs = [onnx.ValueInfoProto() for _ in values]
    for copy, value in zip(kept_outputs, values):
        copy.CopyFrom(value)
    del graph.output[:]
    graph.output.extend(kept_outputs)
    return model.SerializeToString()


def _free_name(name: str, taken: set[str]) -> str:
    """``name``, or a variant of it, that no external data location uses."""
    lowered = {_relative(location).parts[0].lower() for location in taken}
    candidate, count = name, 0
    while candidate.lower() in lowered:
        count += 1
        candidate = f"instrumented-{count}.onnx"
    return candidate


def _relative(location: str) -> Path:
    return Path(os.path.normpath(location.replace("\\", "/")))


class _applied:
    """Append the additions to the loaded model for the length of a ``with``, then take them out."""

    def __init__(self, model: onnx.ModelProto, instrumentation: Instrumentation) -> None:
        self.model = model
        self.instrumentation = instrumentation
        self.lengths: list[tuple[object, int]] = []

    def __enter__(self) -> None:
        for additions in self.instrumentation.graphs.values():
            graph = additions.graph
            for field_list, new in (
                (graph.node, additions.nodes),
                (graph.output, additions.outputs),
                (graph.initializer, additions.initializers),
            ):
                self.lengths.append((field_list, len(field_list)))
                field_list.extend(new)
        for node, outputs in self.instrumentation.node_outputs:
            self.lengths.append((node.output, len(node.output)))
            node.output.extend(outputs)

    def __exit__(self, *exc: object) -> None:
        for field_list, length in reversed(self.lengths):
            del field_list[length:]  # type: ignore[attr-defined]


def _link_external_data(files: dict[str, CheckedFile], folder: Path, notes: list[Note]) -> None:
    """Make the checked external weight files readable beside the temporary model, where onnxruntime looks.

    onnxruntime resolves symbolic links and refuses data outside the model's folder, so the files
    are hard-linked (free on the same file system), or else copied when small enough. Each target must
    lie inside ``folder``, and each source must still be the file the loader checked (same device and
    inode): a file swapped for a link to elsewhere since loading is refused, not followed.
    """
    real_folder = folder.resolve()
    for location, checked in sorted(files.items()):
        target = real_folder / _relative(location)
        if not target.resolve().is_relative_to(real_folder) or target.resolve() == real_folder:
            raise LinkRefused(f"its external data location '{location}' would leave the probe's folder")
        if target.exists():
            continue  # the same file under two spellings of its location
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(checked.path, target, follow_symlinks=False)
        except OSError:
            _copy_checked(location, checked, target, notes)
            continue
        linked = target.stat()
        if (linked.st_dev, linked.st_ino) != (checked.device, checked.inode):
            target.unlink()
            raise LinkRefused(f"its external data file '{location}' changed since it was checked")


def _copy_checked(location: str, checked: CheckedFile, target: Path, notes: list[Note]) -> None:
    if checked.size > COPY_AT_MOST:
        raise LinkRefused(
            f"its external data file '{location}' ({checked.size / 1024**2:,.0f} MB) cannot be hard-linked into "
            f"the probe's temporary folder (another file system) and is too large to copy; set TMPDIR to a "
            "folder on the model's file system"
        )
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(checked.path, flags), "rb") as source:
        opened = os.fstat(source.fileno())
        if (opened.st_dev, opened.st_ino) != (checked.device, checked.inode):
            raise LinkRefused(f"its external data file '{location}' changed since it was checked")
        with open(target, "xb") as copy:
            shutil.copyfileobj(source, copy, 1024**2)
    notes.append(
        Note(
            "info",
            f"probe: external data '{location}' ({checked.size / 1024**2:,.1f} MB) was copied into the probe's "
            "temporary folder, which is on another file system than the model",
        )
    )
