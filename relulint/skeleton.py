"""The model's skeleton: the same model with its main-graph weights turned into typed graph inputs.

The onnx checker and onnx shape inference both serialize the model they are given, so a model of large
weights would be copied whole, and the checker would look for external data relative to the working
folder. Neither needs a weight's values, only its type and shape, so they are handed this skeleton
instead. The loader checks the weights themselves (``relulint.external``, ``relulint.tensors``).

Shape inference does need the values of small constants (Reshape targets, Slice starts, axes): a caller
keeps initializers up to a size, and may fix the graph inputs' shapes to those it will analyse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from relulint.external import expected_nbytes
from relulint.lazy import onnx

if TYPE_CHECKING:
    from onnx import ModelProto, ValueInfoProto

# The model's own fields a skeleton carries over (its graph, opsets, functions and metadata besides).
MODEL_FIELDS = ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string")
# Shape inference keeps initializers up to this size (bytes): Reshape targets, Slice starts, axes.
SHAPE_CONSTANTS_UP_TO = 4096


def typed_skeleton(
    model: ModelProto,
    keep_initializers_up_to: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> ModelProto:
    """The model with its main-graph initializers as typed graph inputs.

    ``keep_initializers_up_to``: initializers stored in the file and of at most this many bytes stay
    initializers (their values are there for shape inference); 0 turns every one into an input.
    ``input_shapes``: graph input name -> the shape it is fixed to (inputs not named keep their own).
    Nodes, outputs, value infos, sparse initializers, model-local functions, opsets and metadata are
    the model's own.
    """
    skeleton = onnx.ModelProto()
    for name in MODEL_FIELDS:
        setattr(skeleton, name, getattr(model, name))
    skeleton.opset_import.extend(model.opset_import)
    skeleton.metadata_props.extend(model.metadata_props)
    skeleton.functions.extend(model.functions)
    source, graph = model.graph, skeleton.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    graph.sparse_initializer.extend(source.sparse_initializer)
    shapes = input_shapes or {}
    graph.input.extend(_fixed(info, shapes.get(info.name)) for info in source.input)
    declared = {info.name for info in source.input}
    external = onnx.TensorProto.EXTERNAL
    for tensor in source.initializer:
        if keep_initializers_up_to and tensor.data_location != external:
            size = expected_nbytes(tensor)
            if size is not None and size <= keep_initializers_up_to:
                graph.initializer.append(tensor)
                continue
        if tensor.name not in declared:  # a declared one already has its input (an overridable default)
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return skeleton


def _fixed(info: ValueInfoProto, shape: Sequence[int] | None) -> ValueInfoProto:
    """The input with its shape fixed, or as it is (no shape asked for, or not a tensor)."""
    if shape is None or not info.type.HasField("tensor_type"):
        return info
    # An input without an element type is fed as float (the probe's and the bounds' synthetic inputs are).
    elem_type = info.type.tensor_type.elem_type or onnx.TensorProto.FLOAT
    return onnx.helper.make_tensor_value_info(info.name, elem_type, list(shape))
