"""The model's inputs as the probe fills them: dtype, one batch's shape, integer ranges.

Dynamic dims come from ``--input-shape NAME=1x3x224x224`` or defaults: dim 0 follows
``--batch``; the spatial dims of an image-like input (rank 4, at most 4 channels) are
224; any other dynamic dim is 32. Integer inputs that index an embedding table (the
indices of a Gather on a constant) are drawn below the table's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from relulint.config import Config
from relulint.graph import Graph, Node
from relulint.lazy import onnx
from relulint.probe.inputs import InputSpec
from relulint.tensors import element_dtype
from relulint.units import LINEAR_OPS, PASS_THROUGH_OPS

IMAGE_SIDE = 224
OTHER_DIM = 32
# When onnxruntime rejects the default dims (a Concat whose widths must agree, a reflect Pad that needs a
# longer input, a Reshape to a fixed size), the probe retries with the next sizes: image (height, width) in
# multiples of 32 and the text-line shapes of OCR recognizers (height 48 or 32, width 320: their backbone
# must bring the height down to one row), longer sequences for other dims. Smaller sizes first: each try
# costs a session, and the first run of one sample (see worker.run) tells a rejected size quickly.
IMAGE_SIZES = ((IMAGE_SIDE, IMAGE_SIDE), (48, 320), (32, 320), (256, 256), (320, 320), (640, 640))
OTHER_DIMS = (OTHER_DIM, 64, 128, 256, 512, 1024)
ATTEMPTS = len(IMAGE_SIZES)
DEFAULT_INT_HIGH = 2  # integers that index nothing relulint can see: 0 and 1 (masks, flags, type ids)
# Ops through which an integer tensor keeps being the same indices.
INDEX_PASS_OPS = PASS_THROUGH_OPS | {"Expand", "Tile", "Concat", "Slice", "Gather", "Transpose"}


@dataclass(frozen=True)
class DefaultedDims:
    """The dynamic dims of one input that the probe sized itself (no data, --input-shape or hint gave them)."""

    input: str
    sizes: tuple[tuple[int, int], ...]  # (axis, size chosen)

    def __str__(self) -> str:  # for notes: 'x' dim 2 = 224, dim 3 = 224
        return f"'{self.input}' " + ", ".join(f"dim {axis} = {size}" for axis, size in self.sizes)


@dataclass
class Specs:
    specs: list[InputSpec] = field(default_factory=list)
    problem: str | None = None  # why no input can be made, None when all can
    defaulted: list[DefaultedDims] = field(default_factory=list)


def input_specs(
    graph: Graph, config: Config, batch: int, data_shapes: dict[str, tuple[int, ...]] | None = None, attempt: int = 0
) -> Specs:
    """Specs for every model input; with real data, dynamic dims take the first data file's sizes.
    ``attempt`` picks the default size of other dynamic dims (see IMAGE_SIZES, OTHER_DIMS)."""
    result = Specs()
    main = graph.loaded.model.graph
    initializers = {t.name for t in main.initializer}
    unknown_shapes = sorted(set(config.input_shapes) - {i.name for i in main.input})
    if unknown_shapes:
        names = ", ".join(i.name for i in main.input if i.name not in initializers)
        result.problem = f"--input-shape names no model input: {', '.join(unknown_shapes)} (inputs: {names})"
        return result
    fed = [value for value in main.input if value.name not in initializers]
    batch_names = {_dims_of(value)[0][1] for value in fed if _dims_of(value) and _dims_of(value)[0][0] is None}
    for value in fed:
        axis = _batch_axis(_dims_of(value), batch_names)
        shape = (data_shapes or {}).get(value.name)
        if shape is None and value.name not in config.input_shapes and is_mask(value.name, _dtype_name(value)):
            # A mask follows the token ids beside it: their --input-shape, or their data (which may leave
            # the mask out: it is then filled with ones).
            known = {**config.input_shapes, **(data_shapes or {})}
            shape = next((tuple(s) for s in known.values() if len(s) == len(_dims_of(value))), None)
        spec, problem, defaulted = _spec(graph, value, config, batch, shape, attempt, axis)
        if spec is None:
            result.problem = problem
            return result
        result.specs.append(spec)
        if defaulted:
            result.defaulted.append(defaulted)
    if not result.specs:
        result.problem = "the model has no inputs to feed"
    return result


def state_output(name: str, outputs: Sequence[str]) -> str | None:
    """The output that carries input ``name``'s recurrent state to the next chunk, by the exporters'
    names: ``state``->``stateN``, ``h``->``hn``, ``h0``->``hn`` or ``h1``, ``state_in``->``state_out``,
    ``in_cache``->``out_cache``, ``past_key_values.0.key``->``present.0.key``, ``past_X``->``present_X``
    (case-insensitive); None when no output pairs."""
    lower = name.lower()
    candidates = [lower + suffix for suffix in ("n", "_n", "_out", "_next", "_new", "out")]
    candidates += [prefix + lower for prefix in ("next_", "new_", "out_")]
    stem = lower.rstrip("0123456789")
    if stem != lower and stem:
        candidates += [stem + "n", stem + "_n", stem + str(int(lower[len(stem) :]) + 1)]
    for old, new in (("_in", "_out"), ("_input", "_output")):
        if lower.endswith(old):
            candidates.append(lower.removesuffix(old) + new)
    for old, new in (("in_", "out_"), ("past_key_values", "present"), ("past", "present")):
        if lower.startswith(old):
            candidates.append(new + lower.removeprefix(old))
    by_lower = {output.lower(): output for output in outputs if output.lower() != lower}
    return next((by_lower[c] for c in candidates if c in by_lower), None)


def carried_states(graph: Graph, specs: list[InputSpec], present: set[str]) -> list[InputSpec]:
    """With real data: float inputs the data does not hold whose name pairs with an output of the same
    element type and rank (``state_output``) are fed the previous chunk's output (zeros first)."""
    main = graph.loaded.model.graph
    outputs = {value.name: value for value in main.output}
    inputs = {value.name: value for value in main.input}
    updated = []
    for spec in specs:
        paired = None if spec.name in present else state_output(spec.name, list(outputs))
        if paired and spec.dtype.startswith("float") and _same_type(inputs[spec.name], outputs[paired]):
            spec = replace(spec, carried_from=paired)
        updated.append(spec)
    return updated


def _same_type(value: onnx.ValueInfoProto, other: onnx.ValueInfoProto) -> bool:
    """The same element type, and the same rank when both declare one."""
    first, second = value.type.tensor_type, other.type.tensor_type
    if first.elem_type != second.elem_type:
        return False
    return not (first.HasField("shape") and second.HasField("shape")) or len(first.shape.dim) == len(second.shape.dim)


def _dims_of(value: onnx.ValueInfoProto) -> list[tuple[int | None, str]]:
    """(size or None when dynamic, symbolic name or "") per dim; [] when the input declares no shape."""
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return []
    return [
        (d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None, d.dim_param)
        for d in value.type.tensor_type.shape.dim
    ]


def _batch_axis(dims: list[tuple[int | None, str]], batch_names: set[str]) -> int | None:
    """Where an input's samples are: dim 0 when it is dynamic; else a dynamic dim named like another
    input's batch dim, or dim 1 of a rank-3 input with a fixed dim 0 beside batched inputs (the
    [layers x directions, batch, hidden] state of ONNX's LSTM/GRU/RNN); None: given once for all."""
    if not dims:
        return None
    if dims[0][0] is None:
        return 0
    named = [i for i, (size, name) in enumerate(dims) if size is None and name and name in batch_names]
    if named:
        return named[0]
    if len(dims) == 3 and dims[1][0] is None and batch_names:
        return 1
    return None


def _spec(
    graph: Graph,
    value: onnx.ValueInfoProto,
    config: Config,
    batch: int,
    data_shape: tuple[int, ...] | None,
    attempt: int = 0,
    batch_axis: int | None = 0,
) -> tuple[InputSpec | None, str | None, DefaultedDims | None]:
    name = value.name
    if not value.type.HasField("tensor_type"):
        return None, f"input '{name}' is not a tensor (sequences and maps cannot be synthesized)", None
    dtype = element_dtype(value.type.tensor_type.elem_type)
    if dtype is None or dtype.kind not in "biuf":
        return None, f"input '{name}' has an element type the probe cannot fill", None
    declared: list[int | None] | None = None
    if value.type.tensor_type.HasField("shape"):
        declared = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim
        ]
    given = config.input_shapes.get(name)
    if given is not None:
        if declared is not None and len(given) != len(declared):
            return None, f"--input-shape {name} has rank {len(given)} but the input has rank {len(declared)}", None
        dims = list(given)
        axis = 0 if declared is None or not declared else batch_axis
        batched = axis is not None and bool(dims)
        if axis is not None and dims:
            dims[axis] = batch
        for index, fixed in enumerate(declared or []):
            if fixed is not None and index != axis and dims[index] != fixed:
                return (
                    None,
                    f"--input-shape {name}: dim {index} is {dims[index]} but the model fixes it to {fixed}",
                    None,
                )
        return _finish(graph, name, dtype.name, tuple(dims), batched, axis or 0, ()), None, None
    if declared is None:
        return None, f"input '{name}' declares no shape; give one with --input-shape {name}=...", None
    dims = []
    defaulted: list[tuple[int, int]] = []
    batched = batch_axis is not None
    for index, dim in enumerate(declared):
        if dim is not None:
            dims.append(dim)
        elif index == batch_axis:
            dims.append(batch)
        elif data_shape is not None and len(data_shape) == len(declared):
            dims.append(data_shape[index])
        else:
            size = _default_dim(declared, index, attempt)
            dims.append(size)
            defaulted.append((index, size))
    chosen = DefaultedDims(name, tuple(defaulted)) if defaulted else None
    free = tuple(i for i, dim in enumerate(declared) if dim is None and i != batch_axis)
    return _finish(graph, name, dtype.name, tuple(dims), batched, batch_axis or 0, free), None, chosen


def _default_dim(declared: list[int | None], index: int, attempt: int = 0) -> int:
    image_like = len(declared) == 4 and declared[1] is not None and declared[1] <= 4
    if image_like and index >= 2:
        return IMAGE_SIZES[attempt][0 if index == 2 else 1]
    return OTHER_DIMS[attempt]


def is_mask(name: str, dtype: str) -> bool:
    """An integer or boolean input named like an attention mask: the probe feeds it ones (every token kept),
    synthetic or missing from --data, where random 0/1 would mask out half of each sequence."""
    return dtype.startswith(("int", "uint", "bool")) and "mask" in name.lower()


def _dtype_name(value: onnx.ValueInfoProto) -> str:
    dtype = element_dtype(value.type.tensor_type.elem_type) if value.type.HasField("tensor_type") else None
    return dtype.name if dtype is not None else ""


def _finish(
    graph: Graph,
    name: str,
    dtype: str,
    shape: tuple[int, ...],
    batched: bool,
    batch_axis: int = 0,
    free_axes: tuple[int, ...] = (),
) -> InputSpec:
    int_high = DEFAULT_INT_HIGH
    sizes = gather_table_sizes(graph, name) if dtype.startswith(("int", "uint")) else []
    if sizes:
        int_high = min(sizes)
    mask = not sizes and is_mask(name, dtype)
    return InputSpec(
        name=name,
        dtype=dtype,
        shape=shape,
        batched=batched,
        int_high=int_high,
        batch_axis=batch_axis,
        free_axes=free_axes,
        constant=1 if mask else None,
    )


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
