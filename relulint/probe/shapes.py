"""Tensor shapes at the probe's batch size: onnx shape inference on a weight-free copy.

The probe needs each layer's rank and unit count to choose its reductions, and the
size of the largest activation to estimate a batch's memory. Shape inference runs on
a skeleton of the model whose large float weights are typed graph inputs (so nothing
large is copied), with the model's inputs fixed to the shapes the probe will feed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import AttributeProto, helper

from relulint.graph import BRANCH_NAMES, Graph
from relulint.probe.inputs import InputSpec
from relulint.skeleton import SHAPE_CONSTANTS_UP_TO, typed_skeleton


@dataclass(frozen=True)
class TensorInfo:
    elem_type: int  # TensorProto element type, 0 when unknown
    shape: tuple[int | None, ...] | None  # None: rank unknown; a None dim: size unknown

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def nbytes(self) -> int | None:
        known = [dim for dim in self.shape or () if dim is not None]
        if self.shape is None or len(known) < len(self.shape):
            return None
        itemsize = _itemsize(self.elem_type)
        return math.prod(known) * itemsize if itemsize else None


@functools.cache
def _itemsize(elem_type: int) -> int | None:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except Exception:  # noqa: BLE001  (0, strings, or an element type numpy does not know)
        return None


def infer_shapes(graph: Graph, specs: list[InputSpec]) -> dict[str, TensorInfo]:
    """Tensor id -> what shape inference says at the given input shapes (ids as in ``Graph``)."""
    skeleton = typed_skeleton(graph.loaded.model, SHAPE_CONSTANTS_UP_TO, {spec.name: spec.shape for spec in specs})
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001  (a model onnx cannot infer: fall back to what the file declares)
        inferred = skeleton
    found: dict[str, TensorInfo] = {}
    _collect(inferred.graph, "", graph, found)
    return found


def _info(value: onnx.ValueInfoProto) -> TensorInfo | None:
    if not value.type.HasField("tensor_type"):
        return None
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return TensorInfo(tensor_type.elem_type, None)
    dims = tuple(d.dim_value if d.dim_value > 0 else None for d in tensor_type.shape.dim)  # 0: symbolic or unknown
    return TensorInfo(tensor_type.elem_type, dims)


def _collect(proto: onnx.GraphProto, prefix: str, graph: Graph, found: dict[str, TensorInfo]) -> None:
    for value in (*proto.input, *proto.value_info, *proto.output):
        info = _info(value)
        if info is not None:
            found[prefix + value.name] = info
    for node in proto.node:
        subgraphs = []
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                subgraphs.append((BRANCH_NAMES.get(attribute.name, attribute.name), attribute.g))
            elif attribute.type == AttributeProto.GRAPHS:
                subgraphs.extend((f"{attribute.name}{i}", g) for i, g in enumerate(attribute.graphs))
        if not subgraphs:
            continue
        # The relulint id of this node: the producer of its first output (ids are deduplicated there).
        first = next((o for o in node.output if o), None)
        node_id = graph.producers.get(prefix + first) if first else None
        if node_id is None:
            continue
        for branch, subgraph in subgraphs:
            _collect(subgraph, f"{node_id}/{branch}/", graph, found)
