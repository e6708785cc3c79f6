"""Constant folding: the numpy value of a foldable op over constant inputs, within a memory budget.

The graph model (``Graph.constant``) walks the producers and caches; this module knows each op.
"""

from __future__ import annotations

import math

import numpy as np

from relulint.lazy import onnx
from relulint.loader import LoadedModel
from relulint.nodes import Node
from relulint.tensors import TensorUnavailable, read_tensor

# Ops whose output is a function of constant inputs only, and cheap to evaluate in numpy.
FOLDABLE_OPS = {
    "Identity",
    "Cast",
    "Transpose",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "ConstantOfShape",
    "DequantizeLinear",
    "Flatten",
}
MAX_FOLD_DEPTH = 64  # a longer constant chain is treated as unknown (hostile models)
MAX_FOLD_ELEMENTS = 1 << 24  # a folded tensor larger than this is not materialized (treated as unknown)
# Folded results are kept only up to this size; a larger one is computed again when asked for. Every fold
# that allocates spends its bytes from a per-model budget, after which folds give "unknown": one
# ConstantOfShape fanned into 60 Casts cached 7.8 GB, and a diamond of uncached folds could recompute
# without end; now at most the budget is ever computed.
CACHE_FOLD_BYTES = 4 * 1024**2
FOLD_BUDGET_BYTES = 1024**3


def constant_node_value(node: Node, loaded: LoadedModel) -> np.ndarray | None:
    for attribute in node.proto.attribute:
        try:
            if attribute.name == "value":
                return read_tensor(attribute.t, loaded)
            if attribute.name == "value_float":
                return np.array(attribute.f, dtype=np.float32)
            if attribute.name == "value_floats":
                return np.array(list(attribute.floats), dtype=np.float32)
            if attribute.name == "value_int":
                return np.array(attribute.i, dtype=np.int64)
            if attribute.name == "value_ints":
                return np.array(list(attribute.ints), dtype=np.int64)
        except TensorUnavailable:
            return None
    return None


def _axes(node: Node, args: list[np.ndarray | None]) -> list[int] | None:
    if len(args) > 1 and args[1] is not None:
        return [int(a) for a in np.asarray(args[1]).reshape(-1)]
    axes = node.attr("axes")
    return list(axes) if axes is not None else None


def fold_allocation(node: Node, args: list[np.ndarray | None]) -> int | None:
    """Bytes that folding ``node`` allocates (0 for a view), known before computing it; None when the
    result would hold more than MAX_FOLD_ELEMENTS elements or its size cannot be told."""
    op = node.op
    try:
        if op == "ConstantOfShape":
            shape = [int(d) for d in np.asarray(args[0]).reshape(-1)]
            if any(d < 0 for d in shape):
                return None
            count, itemsize = math.prod(shape), 8  # the fill value's type is at most 8 bytes wide
        elif op == "Cast":
            count, itemsize = int(np.asarray(args[0]).size), 8
        elif op == "DequantizeLinear":
            shapes = [np.shape(a) for a in args if a is not None]
            if len(shapes) > 1 and len(shapes[1]) == 1 and shapes[1][0] > 1:  # per-axis: scale runs along an axis
                count = int(np.asarray(args[0]).size)
            else:
                count = math.prod(np.broadcast_shapes(*shapes))
            itemsize = 4 * 3  # float32: the values, the shifted values, the result
        else:
            return 0  # Identity, Transpose, Reshape, Squeeze, Unsqueeze, Flatten: views of their input
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    return None if count > MAX_FOLD_ELEMENTS else count * itemsize


def fold(node: Node, args: list[np.ndarray | None]) -> np.ndarray | None:
    """Evaluate one foldable op in numpy (raises on malformed input)."""
    if not args or args[0] is None:
        return None  # every foldable op reads its first input (the graph folds only constant inputs)
    x = args[0]
    op = node.op
    if op == "Identity":
        return x
    if op == "Cast":
        return np.asarray(x).astype(onnx.helper.tensor_dtype_to_np_dtype(node.attr("to")))
    if op == "Transpose":
        perm = node.attr("perm")
        return np.transpose(x, perm if perm else None)
    if op == "Reshape":
        shape = [int(d) for d in np.asarray(args[1]).reshape(-1)]
        if not node.attr("allowzero", 0):
            shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return np.reshape(x, shape)
    if op == "Flatten":
        axis = node.attr("axis", 1)
        axis = axis + x.ndim if axis < 0 else axis
        return np.reshape(x, (int(np.prod(x.shape[:axis])), -1))
    if op == "Squeeze":
        axes = _axes(node, args)
        return np.squeeze(x, axis=tuple(axes) if axes is not None else None)
    if op == "Unsqueeze":
        axes = _axes(node, args) or []
        out_rank = x.ndim + len(axes)
        return np.expand_dims(x, tuple(sorted(a + out_rank if a < 0 else a for a in axes)))
    if op == "ConstantOfShape":
        shape = [int(d) for d in np.asarray(x).reshape(-1)]
        if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_FOLD_ELEMENTS:
            return None  # refuse to allocate a hostile size
        value = node.attr("value")
        fill = onnx.numpy_helper.to_array(value).reshape(-1)[0] if value is not None else np.float32(0)
        return np.full(shape, fill, dtype=np.asarray(fill).dtype)
    if op == "DequantizeLinear":
        scale = np.asarray(args[1], dtype=np.float32)
        zero = args[2] if len(args) > 2 and args[2] is not None else np.zeros_like(scale)
        values = np.asarray(x, dtype=np.float32)
        if scale.ndim == 1 and scale.size > 1:
            if node.attr("block_size", 0):
                return None
            axis = node.attr("axis", 1)
            shape = [1] * values.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
            zero = np.asarray(zero, dtype=np.float32).reshape(shape)
        return (values - np.asarray(zero, dtype=np.float32)) * scale
    return None
