"""The model's inputs as the probe fills them: dtype, one batch's shape, integer ranges.

Dynamic dims come from ``--input-shape NAME=1x3x224x224`` or defaults: dim 0 follows
``--batch``; the spatial dims of an image-like input (rank 4, at most 4 channels) are
224; any other dynamic dim is 32. Integer inputs that index an embedding table (the
indices of a Gather on a constant) are drawn below the table's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relulint.config import Config
from relulint.graph import Graph, Node
from relulint.lazy import onnx
from relulint.probe.inputs import InputSpec
from relulint.tensors import element_dtype
from relulint.units import LINEAR_OPS, PASS_THROUGH_OPS

IMAGE_SIDE = 224
OTHER_DIM = 32
DEFAULT_INT_HIGH = 2  # integers that index nothing relulint can see: 0 and 1 (masks, flags, type ids)
# Ops through which an integer tensor keeps being the same indices.
INDEX_PASS_OPS = PASS_THROUGH_OPS | {"Expand", "Tile", "Concat", "Slice", "Gather", "Transpose"}


@dataclass
class Specs:
    specs: list[InputSpec] = field(default_factory=list)
    problem: str | None = None  # why no input can be made, None when all can
    defaulted: list[str] = field(default_factory=list)  # "x: dims 2, 3 set to 224" for a note


def input_specs(
    graph: Graph, config: Config, batch: int, data_shapes: dict[str, tuple[int, ...]] | None = None
) -> Specs:
    """Specs for every model input; with real data, dynamic dims take the first data file's sizes."""
    result = Specs()
    main = graph.loaded.model.graph
    initializers = {t.name for t in main.initializer}
    unknown_shapes = sorted(set(config.input_shapes) - {i.name for i in main.input})
    if unknown_shapes:
        names = ", ".join(i.name for i in main.input if i.name not in initializers)
        result.problem = f"--input-shape names no model input: {', '.join(unknown_shapes)} (inputs: {names})"
        return result
    for value in main.input:
        if value.name in initializers:
            continue
        spec, problem, defaulted = _spec(graph, value, config, batch, (data_shapes or {}).get(value.name))
        if problem:
            result.problem = problem
            return result
        result.specs.append(spec)
        if defaulted:
            result.defaulted.append(defaulted)
    if not result.specs:
        result.problem = "the model has no inputs to feed"
    return result


def _spec(
    graph: Graph, value: onnx.ValueInfoProto, config: Config, batch: int, data_shape: tuple[int, ...] | None
) -> tuple[InputSpec | None, str | None, str]:
    name = value.name
    if not value.type.HasField("tensor_type"):
        return None, f"input '{name}' is not a tensor (sequences and maps cannot be synthesized)", ""
    dtype = element_dtype(value.type.tensor_type.elem_type)
    if dtype is None or dtype.kind not in "biuf":
        return None, f"input '{name}' has an element type the probe cannot fill", ""
    declared: list[int | None] | None = None
    if value.type.tensor_type.HasField("shape"):
        declared = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim
        ]
    given = config.input_shapes.get(name)
    if given is not None:
        if declared is not None and len(given) != len(declared):
            return None, f"--input-shape {name} has rank {len(given)} but the input has rank {len(declared)}", ""
        dims = list(given)
        batched = declared is None or not declared or declared[0] is None
        if batched and dims:
            dims[0] = batch
        for index, fixed in enumerate(declared or []):
            if fixed is not None and index > 0 and dims[index] != fixed:
                return None, f"--input-shape {name}: dim {index} is {dims[index]} but the model fixes it to {fixed}", ""
        return _finish(graph, name, dtype.name, tuple(dims), batched), None, ""
    if declared is None:
        return None, f"input '{name}' declares no shape; give one with --input-shape {name}=...", ""
    dims: list[int] = []
    defaulted: list[str] = []
    batched = bool(declared) and declared[0] is None
    for index, dim in enumerate(declared):
        if dim is not None:
            dims.append(dim)
        elif index == 0:
            dims.append(batch)
        elif data_shape is not None and len(data_shape) == len(declared):
            dims.append(data_shape[index])
        else:
            size = _default_dim(declared, index)
            dims.append(size)
            defaulted.append(f"dim {index} = {size}")
    note = f"'{name}' {', '.join(defaulted)}" if defaulted else ""
    return _finish(graph, name, dtype.name, tuple(dims), batched), None, note


def _default_dim(declared: list[int | None], index: int) -> int:
    image_like = len(declared) == 4 and declared[1] is not None and declared[1] <= 4
    return IMAGE_SIDE if image_like and index >= 2 else OTHER_DIM


def _finish(graph: Graph, name: str, dtype: str, shape: tuple[int, ...], batched: bool) -> InputSpec:
    int_high = DEFAULT_INT_HIGH
    if dtype.startswith(("int", "uint")):
        sizes = gather_table_sizes(graph, name)
        int_high = min(sizes) if sizes else DEFAULT_INT_HIGH
    return InputSpec(name=name, dtype=dtype, shape=shape, batched=batched, int_high=int_high)


def gather_table_sizes(graph: Graph, tensor: str) -> list[int]:
    """Sizes of the constant tables this integer tensor indexes (through reshapes, casts, ...)."""
    sizes: list[int] = []
    seen = {tensor}
    frontier = [tensor]
    while frontier:
        current = frontier.pop()
        for node in graph.consumers(current):
            if node.op == "Gather" and len(node.inputs) > 1 and node.inputs[1] == current:
                size = _table_size(graph, node)
                if size:
                    sizes.append(size)
                    continue
            if node.op in INDEX_PASS_OPS and node.inputs and node.inputs[0] == current:
                for output in node.outputs:
                    if output and output not in seen:
                        seen.add(output)
                        frontier.append(output)
    return sizes


def _table_size(graph: Graph, gather: Node) -> int | None:
    if not graph.is_constant(gather.inputs[0]):
        return None
    shape = graph.constant_shape(gather.inputs[0])
    if not shape:
        return None
    axis = int(gather.attr("axis", 0))
    if not -len(shape) <= axis < len(shape):
        return None
    return int(shape[axis]) or None


def first_linear(graph: Graph, tensor: str) -> tuple[Node, int] | None:
    """The linear op the input reaches through data-moving ops only, with its channel axis.

    None when anything else (a normalization, an arithmetic op) comes first: the model then
    scales its own input and RL505 has nothing to say.
    """
    current = tensor
    reshaped = False  # after a Flatten or Reshape the features mix the input's axes; keep its axis 1
    for _ in range(16):
        consumers = graph.consumers(current)
        if len(consumers) != 1:
            return None
        node = consumers[0]
        if node.op in LINEAR_OPS and node.inputs and node.inputs[0] == current:
            return node, 1 if node.op in ("Conv", "ConvTranspose") or reshaped else -1
        if node.op in PASS_THROUGH_OPS and node.inputs and node.inputs[0] == current and node.outputs:
            reshaped = reshaped or node.op in ("Flatten", "Reshape")
            current = node.outputs[0]
            continue
        return None
    return None
