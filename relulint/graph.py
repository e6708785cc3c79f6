"""The graph model: ONNX nodes (subgraphs included) in a networkx DiGraph.

Node ids are paths: a main-graph node keeps its name (``Conv_3``); a node inside a
branch of an ``If``, the body of a ``Loop`` or ``Scan`` is named through it
(``If_0/then/Conv_3``). Unnamed nodes are called ``<OpType>_<index>``.

Tensor ids follow the same scoping: a tensor defined in the main graph keeps its
name; one defined inside a subgraph is prefixed with the subgraph's path, so two
branches can reuse a local name. A subgraph's reference to an outer tensor
resolves to the outer id, so edges cross scopes just as data does.

Edges go producer -> consumer and carry the tensor ids in ``tensors``. The node
that owns a subgraph also gets an edge from the producer of each subgraph output.

Constant tensors (initializers, Constant nodes and constant-only chains) are read
lazily with ``constant(tensor_id)`` and cached.

Hostile models: the graph is always acyclic. A model whose data flows in a cycle (invalid
ONNX) gets a note, and each edge that closes a cycle is cut: the consumer's input is
renamed to ``<tensor>@cycle``, a tensor nobody produces, so every walk back or forward
through producers and consumers ends. ``Node.attr`` returns the default for an attribute
of the wrong type, so a string where an int belongs cannot crash a rule.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from relulint.findings import Note
from relulint.folding import (
    CACHE_FOLD_BYTES,
    FOLD_BUDGET_BYTES,
    FOLDABLE_OPS,
    MAX_FOLD_DEPTH,
    MAX_FOLD_ELEMENTS,
    constant_node_value,
    fold,
    fold_allocation,
)
from relulint.lazy import onnx
from relulint.loader import LoadedModel
from relulint.nodes import Node
from relulint.tensors import TensorUnavailable, read_tensor, tensor_problem, tensor_shape

if TYPE_CHECKING:
    import networkx as nx
    from onnx import GraphProto, NodeProto, TensorProto, ValueInfoProto

BRANCH_NAMES = {"then_branch": "then", "else_branch": "else", "body": "body"}
CYCLE_SUFFIX = "@cycle"  # the renamed input of a node whose input closed a cycle
MAX_CYCLE_NOTES = 5


@dataclass
class Graph:
    loaded: LoadedModel
    nodes: dict[str, Node] = field(default_factory=dict)
    producers: dict[str, str] = field(default_factory=dict)  # tensor id -> node id
    consumer_ids: dict[str, list[str]] = field(default_factory=dict)  # tensor id -> node ids
    inputs: list[str] = field(default_factory=list)  # main-graph inputs that are not initializers
    outputs: list[str] = field(default_factory=list)
    initializers: dict[str, TensorProto] = field(default_factory=dict)
    value_info: dict[str, ValueInfoProto] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    # (subgraph owner, subgraph output ids): data leaving a subgraph flows into its owner node
    subgraph_outputs: list[tuple[str, list[str]]] = field(default_factory=list)
    _cache: dict[str, np.ndarray | None] = field(default_factory=dict, repr=False)
    _fold_budget: int = field(default=FOLD_BUDGET_BYTES, repr=False)  # bytes folds may still allocate
    _constant_memo: dict[str, bool] = field(default_factory=dict, repr=False)
    _nx: nx.DiGraph | None = field(default=None, repr=False)

    @property
    def nx(self) -> nx.DiGraph:
        """The networkx view (node ids; edges carry ``tensors``), built on first use.

        Built lazily because a plain lint needs only the producer/consumer maps, and on a graph of
        many thousand nodes networkx construction costs as much as parsing the file.
        """
        if self._nx is None:
            self._nx = _build_nx(self)
        return self._nx

    # ---- lookups -------------------------------------------------------------------------
    def producer(self, tensor: str) -> Node | None:
        node_id = self.producers.get(tensor)
        return self.nodes[node_id] if node_id is not None else None

    def consumers(self, tensor: str) -> list[Node]:
        return [self.nodes[n] for n in self.consumer_ids.get(tensor, ())]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def is_constant(self, tensor: str) -> bool:
        if tensor not in self._constant_memo:
            self._constant_memo[tensor] = self._constant_source(tensor, 0)
        return self._constant_memo[tensor]

    def _constant_source(self, tensor: str, depth: int) -> bool:
        if tensor in self.initializers:
            return True
        if tensor in self._constant_memo:  # a diamond of foldable ops is walked once, not 2**depth times
            return self._constant_memo[tensor]
        node = self.producer(tensor)
        if node is None or depth > MAX_FOLD_DEPTH:
            return False
        if node.op == "Constant":
            return True
        if node.op in FOLDABLE_OPS and node.domain in ("", "ai.onnx"):
            answer = all(self._constant_source(t, depth + 1) for t in node.computed_inputs)
            self._constant_memo[tensor] = answer
            return answer
        return False

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of a constant tensor, or None when it is computed or unreadable."""
        if tensor in self._cache:
            return self._cache[tensor]
        value = self._evaluate(tensor, 0)
        # Initializer values are views of the model's bytes or read again from their file (never held:
        # they may be gigabytes), so only folded results (which cost a computation) are kept, small ones.
        if tensor not in self.initializers:
            self._remember(tensor, value)
        return value

    def _remember(self, tensor: str, value: np.ndarray | None) -> None:
        if value is None or value.nbytes <= CACHE_FOLD_BYTES:
            self._cache[tensor] = value

    def constant_shape(self, tensor: str) -> tuple[int, ...] | None:
        if tensor in self.initializers:
            initializer = self.initializers[tensor]
            # dims are believed only when the data agrees with them (a header may declare 10**12 units)
            return None if tensor_problem(initializer, self.loaded) else tensor_shape(initializer)
        value = self.constant(tensor)
        return None if value is None else tuple(value.shape)

    def _evaluate(self, tensor: str, depth: int) -> np.ndarray | None:
        if tensor in self.initializers:
            try:
                return read_tensor(self.initializers[tensor], self.loaded)
            except TensorUnavailable:
                return None
        node = self.producer(tensor)
        if node is None or depth > MAX_FOLD_DEPTH or node.domain not in ("", "ai.onnx"):
            return None
        if node.op == "Constant":
            return constant_node_value(node, self.loaded)
        if node.op not in FOLDABLE_OPS:
            return None
        args: list[np.ndarray | None] = []
        for name in node.inputs:
            if not name:
                args.append(None)
                continue
            if name in self._cache:
                value = self._cache[name]
            else:
                value = self._evaluate(name, depth + 1)
                if name not in self.initializers:
                    self._remember(name, value)  # small folds are computed once
            if value is None:
                return None
            args.append(value)
        allocates = fold_allocation(node, args)
        if allocates is None or allocates > min(self._fold_budget, MAX_FOLD_ELEMENTS * 8):
            return None  # too large for one tensor, or the model's folds have spent their budget
        self._fold_budget -= allocates
        try:
            return fold(node, args)
        except Exception:  # a malformed constant chain is simply not constant
            return None

    def tensor_shape(self, tensor: str) -> list[int | str | None] | None:
        """Declared shape from graph inputs, outputs or value_info (symbolic dims as strings)."""
        info = self.value_info.get(tensor)
        if info is None:
            shape = self.constant_shape(tensor) if self.is_constant(tensor) else None
            return list(shape) if shape is not None else None
        if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
            return None
        dims: list[int | str | None] = []
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(dim.dim_value)
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        return dims


def build_graph(loaded: LoadedModel) -> Graph:
    # The graph is many small objects that live as long as the analysis: the cyclic garbage collector would
    # walk them again and again while they are made (at 100,000 nodes: 36-43 µs of processor time per node
    # with it, 23-26 without; 16-22 at 10,000 either way). They form no cycles worth collecting early.
    with collector_paused():
        return _build_graph(loaded)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the graph model or its unit view is built (many small,
    long-lived objects it would rescan again and again); its state before is restored, also on an error."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build_graph(loaded: LoadedModel) -> Graph:
    graph = Graph(loaded=loaded)
    builder = _Builder(graph)
    builder.add_scope(loaded.model.graph, scope="", outer={})
    main = loaded.model.graph
    initializer_names = {t.name for t in main.initializer}
    graph.inputs = [i.name for i in main.input if i.name not in initializer_names]
    graph.outputs = [o.name for o in main.output]
    builder.report()
    closing, cycle = cycle_edges(graph)
    if closing:
        cut = cut_cycles(graph, closing)
        shown = ", ".join(f"'{tensor}' into '{target}'" for _, target, tensor in cut[:MAX_CYCLE_NOTES])
        more = f" and {len(cut) - MAX_CYCLE_NOTES} more" if len(cut) > MAX_CYCLE_NOTES else ""
        graph.notes.append(
            Note(
                "checker",
                f"the graph has a cycle ({' -> '.join(cycle[:6])} -> …); the edges that close cycles "
                f"({shown}{more}) are cut, and those inputs are treated as unknown",
            )
        )
    return graph


def cut_cycles(graph: Graph, closing: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """Make the graph acyclic by cutting every tensor that flows from ``source`` into ``target`` for each pair.

    Returns (source node, target node, tensor) per cut edge. A cut node input is renamed to
    ``<tensor>@cycle`` (produced by no node); a cut subgraph output no longer feeds its owner.
    """
    producers = graph.producers
    cut: list[tuple[str, str, str]] = []
    for source, target in closing:
        owned = [t for owner, outputs in graph.subgraph_outputs if owner == target for t in outputs]
        tensors = dict.fromkeys(t for t in (*graph.nodes[target].inputs, *owned) if t and producers.get(t) == source)
        cut.extend((source, target, tensor) for tensor in tensors)
    for _source, target, tensor in cut:
        node = graph.nodes[target]
        if tensor in node.inputs:
            renamed = tensor + CYCLE_SUFFIX
            node.inputs[:] = [renamed if t == tensor else t for t in node.inputs]
            graph.consumer_ids[tensor] = [n for n in graph.consumer_ids.get(tensor, []) if n != target]
            graph.consumer_ids.setdefault(renamed, []).append(target)
        graph.subgraph_outputs[:] = [
            (owner, ["" if owner == target and t == tensor else t for t in outputs])
            for owner, outputs in graph.subgraph_outputs
        ]
    graph._nx = None
    graph._cache.clear()
    graph._constant_memo.clear()
    return cut


def cycle_edges(graph: Graph) -> tuple[list[tuple[str, str]], list[str]]:
    """Edges (source, target, tensor) that close a cycle, found by one depth-first walk, and the node ids along the
    first cycle it closes ([] and [] for a DAG)."""
    producers = graph.producers
    successors: dict[str, list[str]] = {node_id: [] for node_id in graph.nodes}
    for node in graph.nodes.values():
        for tensor in node.inputs:
            source = producers.get(tensor)
            if source is not None:
                successors[source].append(node.id)
    for owner, outputs in graph.subgraph_outputs:
        for tensor in outputs:
            source = producers.get(tensor) if tensor else None
            if source is not None and source != owner:
                successors[source].append(owner)
    ON_PATH, DONE = 1, 2
    state: dict[str, int] = {}
    closing: dict[tuple[str, str], None] = {}  # in the order found
    first: list[str] = []
    for root in graph.nodes:
        if root in state:
            continue
        state[root] = ON_PATH
        path = [root]
        stack = [iter(successors[root])]
        while stack:
            for target in stack[-1]:
                seen = state.get(target)
                if seen is None:
                    state[target] = ON_PATH
                    path.append(target)
                    stack.append(iter(successors[target]))
                    break
                if seen == ON_PATH:
                    if not first:
                        first = path[path.index(target) :]
                    closing[(path[-1], target)] = None
            else:
                state[path.pop()] = DONE
                stack.pop()
    return list(closing), first


def _build_nx(graph: Graph) -> nx.DiGraph:
    edges: dict[tuple[str, str], list[str]] = {}
    for node in graph.nodes.values():
        for tensor in node.inputs:
            source = graph.producers.get(tensor) if tensor else None
            if source is not None:
                edges.setdefault((source, node.id), []).append(tensor)
    for owner, outputs in graph.subgraph_outputs:
        for tensor in outputs:
            source = graph.producers.get(tensor)
            if source is not None and source != owner:
                edges.setdefault((source, owner), []).append(tensor)
    import networkx  # imported here: it costs ~0.1 s per process, and a plain lint never needs it

    view = networkx.DiGraph()
    view.add_nodes_from(graph.nodes)
    view.add_edges_from((u, v, {"tensors": tensors}) for (u, v), tensors in edges.items())
    return view


class _Builder:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.used_ids: set[str] = set()
        self.suffixes: dict[str, int] = {}  # name -> the last suffix given to a node of that name
        self.dangling: set[str] = set()
        self.duplicates: set[str] = set()

    def add_scope(self, proto: GraphProto, scope: str, outer: dict[str, str]) -> dict[str, str]:
        """Register one (sub)graph's tensors and nodes; return its local-name -> id map."""
        graph = self.graph
        prefix = f"{scope}/" if scope else ""
        env = dict(outer)
        producers, consumers, value_info = graph.producers, graph.consumer_ids, graph.value_info
        for info in (*proto.input, *proto.value_info, *proto.output):
            value_info.setdefault(prefix + info.name, info)
        for tensor in proto.initializer:
            env[tensor.name] = prefix + tensor.name
            graph.initializers[prefix + tensor.name] = tensor
        for info in proto.input:
            env[info.name] = prefix + info.name
        nodes: list[tuple[Node, NodeProto]] = []
        for index, node_proto in enumerate(proto.node):
            node_id = self._unique_id(prefix + (node_proto.name or f"{node_proto.op_type}_{index}"))
            outputs = []
            for name in node_proto.output:
                if not name:
                    outputs.append("")
                    continue
                tensor_id = env[name] = prefix + name
                if tensor_id in producers:
                    self.duplicates.add(tensor_id)
                else:
                    producers[tensor_id] = node_id
                outputs.append(tensor_id)
            node = Node(node_id, node_proto.op_type, node_proto.domain, node_proto, [], outputs, scope)
            graph.nodes[node_id] = node
            nodes.append((node, node_proto))
        for node, node_proto in nodes:
            inputs = node.inputs
            for name in node_proto.input:
                if not name:
                    inputs.append("")
                    continue
                tensor_id = env.get(name)
                if tensor_id is None:
                    tensor_id = prefix + name
                    self.dangling.add(tensor_id)
                inputs.append(tensor_id)
                consumers.setdefault(tensor_id, []).append(node.id)
            if node_proto.attribute:
                self._add_subgraphs(node, node_proto, env)
        return env

    def _add_subgraphs(self, node: Node, node_proto: NodeProto, env: dict[str, str]) -> None:
        for attribute in node_proto.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                subgraphs = [(BRANCH_NAMES.get(attribute.name, attribute.name), attribute.g)]
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                subgraphs = [(f"{attribute.name}{i}", g) for i, g in enumerate(attribute.graphs)]
            else:
                continue
            for branch, subgraph in subgraphs:
                sub_env = self.add_scope(subgraph, f"{node.id}/{branch}", env)
                self.graph.subgraph_outputs.append((node.id, [sub_env.get(o.name, "") for o in subgraph.output]))

    def _unique_id(self, wanted: str) -> str:
        # Each name remembers the last suffix it handed out, so n nodes sharing one name cost n steps, not
        # n**2 / 2 (70,000 such nodes never finished). The loop still skips suffixes a node really has.
        node_id, suffix = wanted, self.suffixes.get(wanted, 1)
        while node_id in self.used_ids:
            suffix += 1
            node_id = f"{wanted}#{suffix}"
        self.suffixes[wanted] = suffix
        self.used_ids.add(node_id)
        return node_id

    def report(self) -> None:
        graph = self.graph
        for tensor in sorted(self.dangling - set(graph.initializers) - set(graph.value_info))[:20]:
            graph.notes.append(
                Note("checker", f"tensor '{tensor}' is used but produced by no node, input or initializer")
            )
        for tensor in sorted(self.duplicates)[:20]:
            graph.notes.append(
                Note("checker", f"tensor '{tensor}' is written by more than one node; the first writer is used")
            )
        unreadable = [
            problem
            for tensor in graph.initializers.values()
            if tensor.data_location != onnx.TensorProto.EXTERNAL  # the loader has noted those
            and (problem := tensor_problem(tensor, graph.loaded))
        ]
        for problem in unreadable[:20]:
            graph.notes.append(Note("skipped", f"{problem}; its values are treated as unknown"))
        if len(unreadable) > 20:
            graph.notes.append(Note("skipped", f"{len(unreadable) - 20} more initializers cannot be read either"))


def count_parameters(graph: Graph) -> int:
    """Elements of floating-point initializers (the learnable weights), from their shapes alone."""
    float_types = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT4,
        onnx.TensorProto.UINT4,
    }
    total = 0
    for tensor in graph.initializers.values():
        if tensor.data_type in float_types:
            total += max(math.prod(tensor_shape(tensor)), 0)  # hostile negative dims count as empty
    return total
