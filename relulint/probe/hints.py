"""Sizes for dynamic input dims that the model itself hints at, tried when onnxruntime rejects the defaults.

Before the blind retries (``specs.IMAGE_SIZES``, ``OTHER_DIMS``) the probe reads, in this order:
the model's metadata (a ``metadata_props`` entry naming the input or a shape, such as ``input_shape`` =
``1x3x640x640``); the size a Reshape, Flatten + MatMul/Gemm or MatMul needs, from its constant (or, with
onnx shape inference and data propagation, computed) target or weight; a reflect/edge Pad's amount; a
Slice's constant end. Only ops the input reaches through ops that keep its shape count, and only dims the
model leaves dynamic (not the batch axis, not those set with --input-shape) are hinted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from relulint.graph import Graph, Node
from relulint.probe.inputs import InputSpec
from relulint.probe.shapes import TensorInfo, infer_shapes

# Ops whose output has the shape of their data input (elementwise, normalizations, casts).
SAME_SHAPE_OPS = {
    "Identity", "Cast", "Dropout", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Abs", "Neg", "Clip", "Sqrt",
    "Add", "Sub", "Mul", "Div", "BatchNormalization", "LayerNormalization", "InstanceNormalization",
}  # fmt: skip
MAX_STEPS = 32  # ops followed forward from an input
MAX_HINTED = 1 << 20  # a hinted size above this is no plausible input size
PAD_ROOM = 4  # a padded input is hinted at PAD_ROOM times the pad: room for the layers after it


@dataclass
class Hints:
    """input name -> {dim index: size}, and where each size came from (for the note)."""

    sizes: dict[str, dict[int, int]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def add(self, spec: InputSpec, dims: dict[int, int], source: str) -> None:
        known = self.sizes.setdefault(spec.name, {})
        fresh = {d: s for d, s in dims.items() if d not in known and d in spec.free_axes and 0 < s <= MAX_HINTED}
        if fresh:
            known.update(fresh)
            shown = ", ".join(f"dim {d} = {s}" for d, s in sorted(fresh.items()))
            self.sources.append(f"'{spec.name}' {shown} ({source})")

    def shapes(self, specs: list[InputSpec]) -> dict[str, tuple[int, ...]]:
        """Full shapes (--input-shape style) of the hinted inputs: hinted dims, the others as they were."""
        result = {}
        for spec in specs:
            dims = self.sizes.get(spec.name)
            if dims:
                result[spec.name] = tuple(dims.get(i, size) for i, size in enumerate(spec.shape))
        return result


def shape_hints(graph: Graph, specs: list[InputSpec]) -> Hints:
    hints = Hints()
    metadata = {p.key: p.value for p in graph.loaded.model.metadata_props}
    for spec in specs:
        _from_metadata(hints, spec, metadata)
    inferred = None
    for spec in specs:
        for node, tensor in _reached(graph, spec.name):
            if node.op == "Reshape" and inferred is None:
                inferred = infer_shapes(graph, specs)  # computed targets resolved by data propagation
            _from_node(hints, graph, spec, node, tensor, inferred or {})
    return hints


def _from_metadata(hints: Hints, spec: InputSpec, metadata: dict[str, str]) -> None:
    for key, value in metadata.items():
        lowered = key.lower()
        if spec.name.lower() not in lowered and not any(w in lowered for w in ("shape", "size", "resolution")):
            continue
        numbers = [int(n) for n in re.findall(r"\d+", value)][:8]
        rank = len(spec.shape)
        if len(numbers) == rank:
            dims = dict(enumerate(numbers))
        elif rank == 4 and len(numbers) in (1, 2):  # an image side, or height and width
            height, width = numbers[0], numbers[-1]
            nhwc = 3 not in spec.free_axes and spec.shape[3] in (1, 3) and 1 in spec.free_axes
            dims = {1: height, 2: width} if nhwc else {2: height, 3: width}
        else:
            continue
        hints.add(spec, dims, f"metadata '{key}' = '{value[:40]}'")


def _reached(graph: Graph, name: str) -> list[tuple[Node, str]]:
    """(op, the tensor of the input it reads) for each op the input reaches through shape-keeping ops."""
    found = []
    frontier = [name]
    seen = {name}
    while frontier and len(seen) < MAX_STEPS:
        tensor = frontier.pop()
        for node in graph.consumers(tensor):
            if node.op in SAME_SHAPE_OPS:
                for output in node.outputs[:1]:
                    if output and output not in seen:
                        seen.add(output)
                        frontier.append(output)
            else:
                found.append((node, tensor))
    return found


def _from_node(
    hints: Hints, graph: Graph, spec: InputSpec, node: Node, tensor: str, inferred: dict[str, TensorInfo]
) -> None:
    if not node.inputs or node.inputs[0] != tensor:
        return  # the input is not the data this op reshapes, multiplies, pads or slices
    mode = node.attr("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if node.op in ("Reshape", "Flatten"):
        needed = _reshape_product(graph, node, inferred) if node.op == "Reshape" else _weight_rows(graph, node)
        if needed:
            _per_sample(hints, spec, needed, f"{node.op} '{node.id}' needs {needed} values per sample")
    elif node.op in ("MatMul", "Gemm"):
        rows = _matmul_rows(graph, node)
        if rows:
            hints.add(spec, {len(spec.shape) - 1: rows}, f"{node.op} '{node.id}' takes {rows} features")
    elif node.op == "Pad" and mode in ("reflect", "edge"):
        pads = _constant_ints(graph, node.inputs[1]) if len(node.inputs) > 1 else node.attr("pads")
        if pads and len(pads) == 2 * len(spec.shape):
            half = len(spec.shape)
            dims = {i: PAD_ROOM * max(pads[i], pads[i + half]) for i in range(half) if max(pads[i], pads[i + half]) > 0}
            hints.add(spec, dims, f"a {mode} Pad '{node.id}' of {list(pads)}")
    elif node.op == "Slice" and len(node.inputs) >= 3:
        ends = _constant_ints(graph, node.inputs[2])
        axes = _constant_ints(graph, node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
        if ends:
            axes = axes or list(range(len(ends)))
            dims = {a % len(spec.shape): e for a, e in zip(axes, ends) if 0 < e < MAX_HINTED}
            hints.add(spec, dims, f"Slice '{node.id}' reads up to {list(ends)}")


def _per_sample(hints: Hints, spec: InputSpec, needed: int, source: str) -> None:
    """The one dynamic dim (or the two equal sides of an image) that make a sample hold ``needed`` values."""
    free = [i for i in spec.free_axes if i not in hints.sizes.get(spec.name, {})]
    fixed = math.prod(size for i, size in enumerate(spec.shape) if i != spec.batch_axis and i not in spec.free_axes)
    if not free or needed % fixed:
        return
    rest = needed // fixed
    if len(free) == 1:
        hints.add(spec, {free[0]: rest}, source)
    elif len(free) == 2 and math.isqrt(rest) ** 2 == rest:
        hints.add(spec, {free[0]: math.isqrt(rest), free[1]: math.isqrt(rest)}, source)


def _reshape_product(graph: Graph, node: Node, inferred: dict[str, TensorInfo]) -> int | None:
    """Values per sample after a Reshape whose target keeps dim 0 (0, -1 or the batch) and fixes the rest."""
    target = _constant_ints(graph, node.inputs[1]) if len(node.inputs) > 1 else None
    rest = target[1:] if target is not None and -1 not in target[1:] else _inferred_rest(node, inferred)
    if not rest or any(d <= 0 for d in rest):
        return None  # 0 copies a dim of the input: the product says nothing new
    return math.prod(rest)


def _inferred_rest(node: Node, inferred: dict[str, TensorInfo]) -> list[int] | None:
    """The dims after dim 0 of the op's output, when shape inference knows them all."""
    info = inferred.get(node.outputs[0]) if node.outputs else None
    shape = info.shape if info is not None else None
    rest = [d for d in shape[1:] if d is not None] if shape else []
    return rest if shape and len(rest) == len(shape) - 1 else None


def _weight_rows(graph: Graph, flatten: Node) -> int | None:
    """After a Flatten: the rows of the constant weight of the MatMul/Gemm it feeds."""
    consumers = graph.consumers(flatten.outputs[0]) if flatten.outputs else []
    if len(consumers) == 1 and consumers[0].op in ("MatMul", "Gemm") and int(flatten.attr("axis", 1)) == 1:
        return _matmul_rows(graph, consumers[0])
    return None


def _matmul_rows(graph: Graph, node: Node) -> int | None:
    if len(node.inputs) < 2 or not graph.is_constant(node.inputs[1]):
        return None
    shape = graph.constant_shape(node.inputs[1])
    if not shape or len(shape) != 2:
        return None
    transposed = node.op == "Gemm" and int(node.attr("transB", 0)) == 1
    return int(shape[1] if transposed else shape[0]) or None


def _constant_ints(graph: Graph, tensor: str) -> list[int] | None:
    if not tensor or not graph.is_constant(tensor):
        return None
    value = graph.constant(tensor)
    if value is None or value.dtype.kind not in "iu" or value.ndim != 1 or value.size > 16:
        return None
    return [int(v) for v in value]
