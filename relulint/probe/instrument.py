"""Instrumentation: which layers the probe taps, and the graph changes that give their statistics.

Each probed layer gains the reduction nodes of ``relulint.probe.reductions``; small [rows, units]
activations are concatenated and reduced together. ``relulint.probe.writer`` writes the result.

Order matters for memory. onnxruntime (priority-based order, lowest node index first)
runs the reductions of a layer right after the layer when the reductions are appended
in reverse layer order, and within a layer in the order they are written; then each
activation is freed as in a plain run and only one transient of its size exists.

Layers inside an If branch are reduced inside the branch; the results leave through new
outputs of the branch (the other branch outputs empty tensors) and of the If node.
Layers inside Loop or Scan bodies are not probed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from relulint.graph import Graph
from relulint.probe.protocol import REDUCED, LayerTap
from relulint.probe.reductions import Additions, Names, add_reductions
from relulint.probe.shapes import TensorInfo
from relulint.units import Layer

OTHER_BRANCH = {"then": "else_branch", "else": "then_branch"}
BRANCH_ATTRIBUTE = {"then": "then_branch", "else": "else_branch"}


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
        kind, outputs = add_reductions(additions, names, local, layer.channel_axis, units, info, per_sample, opset)
        exported = _export(graph, result, names, layer.scope, outputs)
        min_rank = 2 if kind == REDUCED and info.rank is None else 0
        taps[layer.name] = LayerTap(layer.name, kind, tuple(exported), units, per_sample or 0, min_rank=min_rank)
    result.taps = [taps[layer.name] for layer, _, _ in probed]
    return result


def _groups(probed: list[tuple[Layer, TensorInfo, int]]) -> dict[str, list[tuple[Layer, TensorInfo, int]]]:
    """Layer name -> its group, for small float [rows, units] main-graph activations with the same rows."""
    groups: dict[str, list[tuple[Layer, TensorInfo, int]]] = {}
    open_groups: dict[int | None, tuple[list[tuple[Layer, TensorInfo, int]], int]] = {}  # rows -> (group, bytes)
    for layer, info, units in probed:
        size = info.nbytes()
        if (
            layer.scope
            or info.elem_type != TensorProto.FLOAT
            or info.shape is None
            or len(info.shape) != 2
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
    kind, outputs = add_reductions(additions, names, joined, -1, width, info, None, opset)
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
    return int(np.prod([d or 0 for d in info.shape[2:]], dtype=np.int64))  # none is None (checked above)


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
