"""Model-local functions inlined into the main graph, so that their nodes are analysed too, within a
budget of nodes counted before anything is inlined."""

from __future__ import annotations

from collections.abc import Iterator

from relulint.errors import one_line
from relulint.findings import Note
from relulint.lazy import onnx
from relulint.loaded import LoadedModel

# Nodes the main graph may have once model-local functions are inlined. A 3 KB file whose functions each
# call the previous one twice, 24 levels deep, would inline to 2**24 nodes (killed at 8 GB); the budget is
# well above the 100,000-node graphs relulint lints in seconds.
MAX_INLINED_NODES = 1_000_000


def inlined_node_count(model: onnx.ModelProto, limit: int) -> int | None:
    """Nodes of the model once its local functions are inlined, counted without inlining; None when the
    count passes ``limit`` or a function calls itself. Each function's size is computed once, callees
    first (an explicit stack: a chain of thousands of functions must not exhaust Python's)."""
    functions = {(f.domain, f.name): f for f in model.functions}
    calls = {key: _calls(function, functions) for key, function in functions.items()}
    sizes: dict[tuple[str, str], int] = {}
    ON_STACK = -1
    for root in functions:
        if root in sizes:
            continue
        sizes[root] = ON_STACK
        stack = [(root, iter(calls[root]))]
        while stack:
            key, pending = stack[-1]
            callee = next(pending, None)
            if callee is not None:
                if sizes.get(callee) == ON_STACK:
                    return None  # recursion: no finite inlining
                if callee not in sizes:
                    sizes[callee] = ON_STACK
                    stack.append((callee, iter(calls[callee])))
                continue
            stack.pop()
            size = _own_nodes(functions[key], functions, sizes, limit)
            if size is None:
                return None
            sizes[key] = size
    return _own_nodes(model.graph, functions, sizes, limit)


def _nodes_within(owner: onnx.GraphProto | onnx.FunctionProto) -> Iterator[onnx.NodeProto]:
    """The nodes of a graph or function body and of every subgraph in them."""
    stack = [owner]
    while stack:
        current = stack.pop()
        for node in current.node:
            yield node
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


def _calls(owner: onnx.FunctionProto, functions: dict[tuple[str, str], onnx.FunctionProto]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(key for n in _nodes_within(owner) if (key := (n.domain, n.op_type)) in functions))


def _own_nodes(
    owner: onnx.GraphProto | onnx.FunctionProto,
    functions: dict[tuple[str, str], onnx.FunctionProto],
    sizes: dict[tuple[str, str], int],
    limit: int,
) -> int | None:
    total = 0
    for node in _nodes_within(owner):
        key = (node.domain, node.op_type)
        total += sizes[key] if key in functions else 1
        if total > limit:
            return None
    return total


def inline_functions(loaded: LoadedModel) -> None:
    """Replace calls of model-local functions by their bodies so their nodes are analysed too."""
    if not loaded.model.functions:
        return
    if inlined_node_count(loaded.model, MAX_INLINED_NODES) is None:
        loaded.notes.append(
            Note(
                "skipped",
                f"model-local functions would expand to more than {MAX_INLINED_NODES:,} nodes once inlined (or "
                "call themselves); they are not inlined and their bodies are not analysed",
            )
        )
        return
    try:
        from onnx import inliner

        loaded.model = inliner.inline_local_functions(loaded.model)
    except Exception as exc:
        loaded.notes.append(
            Note(
                "skipped",
                f"model-local functions could not be inlined ({one_line(exc)}); their bodies are not analysed",
            )
        )
