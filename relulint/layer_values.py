"""A layer's numbers, read when asked for: its weight as a ``[units, fan_in]`` matrix or in row blocks of
bounded memory, and its summed per-unit bias (the ``Layer`` says where they are and how they are laid out).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from relulint.graph import Graph
from relulint.layer import Layer
from relulint.tensors import as_float, element_dtype, row_blocks, tensor_problem, tensor_shape

# numpy dtype kinds no weight or bias has: objects, strings, dates (ml_dtypes' bfloat16, float8 and int4 are "V")
NON_NUMERIC_KINDS = "OUSMm"


def weight_matrix(graph: Graph, layer: Layer) -> np.ndarray | None:
    """The layer's weight as ``[units, fan_in]`` floats, or None when it is unknown."""
    if layer.weight is None:
        return None
    value = graph.constant(layer.weight)
    if value is None or value.dtype.kind in NON_NUMERIC_KINDS:
        return None
    w = as_float(value)
    layout = layer.weight_layout
    if layout == "conv":
        return w.reshape(w.shape[0], _product(w.shape[1:]))  # not -1: a weight may have no elements
    if layout == "convtranspose":
        group, in_channels = layer.group, w.shape[0]
        per_group = in_channels // group
        # [C, M/g, k...] -> for each group g, units g*M/g.. use input channels of that group only
        blocks = [
            np.moveaxis(w[g * per_group : (g + 1) * per_group], 1, 0).reshape(
                w.shape[1], per_group * _product(w.shape[2:])
            )
            for g in range(group)
        ]
        return np.concatenate(blocks, axis=0)
    if w.ndim > 2:
        w = w.reshape([d for d in w.shape if d != 1])
    if layout in ("gemm_transposed", "matmul_left"):
        return w
    return w.T


@dataclass(frozen=True)
class WeightBlocks:
    """A layer's weight as stored, seen as a 2-D matrix and read in blocks of consecutive rows (so a weight
    of any size costs one block of memory): its rows are the units (Conv, transposed Gemm) or its columns are
    (Gemm, MatMul), each unit having ``per_unit`` weights."""

    blocks: Iterator[np.ndarray]
    units_on_rows: bool
    units: int
    per_unit: int


def weight_blocks(graph: Graph, layer: Layer) -> WeightBlocks | None:
    """The layer's weight initializer in row blocks, as floats; None when the weight is computed (a fold),
    unreadable, or of a layout whose units are not whole rows or columns (ConvTranspose): ``weight_matrix``
    then."""
    if layer.weight not in graph.initializers or layer.weight_layout in (None, "convtranspose"):
        return None
    tensor = graph.initializers[layer.weight]
    dtype = element_dtype(tensor.data_type)
    dims = tensor_shape(tensor)
    if tensor_problem(tensor, graph.loaded) or dtype is None or dtype.kind in NON_NUMERIC_KINDS or len(dims) < 2:
        return None
    if layer.weight_layout == "conv":
        rows, columns, units_on_rows = dims[0], _product(dims[1:]), True
    else:
        kept = [d for d in dims if d != 1] if len(dims) > 2 else list(dims)
        if len(kept) != 2:
            return None
        (rows, columns), units_on_rows = kept, layer.weight_layout in ("gemm_transposed", "matmul_left")
    if not rows or not columns:
        return None
    blocks = (as_float(block) for block in row_blocks(tensor, graph.loaded, rows))
    units, per_unit = (rows, columns) if units_on_rows else (columns, rows)
    return WeightBlocks(blocks, units_on_rows, units, per_unit)


def _product(dims: tuple[int, ...]) -> int:
    return int(np.prod(dims, dtype=np.int64))


def bias_vector(graph: Graph, layer: Layer) -> np.ndarray | None:
    """The summed per-unit bias (zeros when the layer has none), or None when unreadable."""
    if layer.units is None:
        return None
    total = np.zeros(layer.units, dtype=np.float64)
    for term in layer.bias:
        value = graph.constant(term.tensor)
        if value is None or value.dtype.kind in NON_NUMERIC_KINDS:
            return None
        flat = np.asarray(value.real if value.dtype.kind == "c" else value, dtype=np.float64).reshape(-1)
        if flat.size not in (1, layer.units):
            return None  # not per unit (e.g. broadcast over another axis)
        total += term.sign * term.scale * flat
    return total
