"""Bounds through the linear ops (Conv, ConvTranspose, Gemm, MatMul) and the normalizations."""

from __future__ import annotations

import math

import numpy as np

from relulint.bounds import kernels
from relulint.bounds.interval import (
    linear,
    make,
    multiply,
    rounding,
)
from relulint.bounds.ops.base import (
    Inputs,
    Result,
    Unsupported,
    attribute_text,
    axis_index,
    check_size,
    handles,
    window_attributes,
)


@handles("Conv")
def _conv(inp: Inputs) -> Result:
    x, w = inp.bound(0), inp.weight(1)
    spatial = x.shape[2:]
    group = int(inp.attr("group", 1))
    if w.ndim != len(x.shape) or group < 1 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise Unsupported(f"weight {list(w.shape)} and group {group} do not fit the input {list(x.shape)}")
    geometry = window_attributes(inp, spatial, w.shape[2:])
    check_size((x.shape[0], w.shape[0], *geometry.out))
    bias = inp.weight(2).reshape(-1, *([1] * len(spatial))) if inp.has(2) else 0.0
    terms = int(np.prod(w.shape[1:]))
    return [linear(x, lambda a, k: kernels.conv(a, k, geometry, group), w, bias, terms, inp.domain)]


@handles("ConvTranspose")
def _conv_transpose(inp: Inputs) -> Result:
    x, w = inp.bound(0), inp.weight(1)
    n = w.ndim - 2
    auto_pad = attribute_text(inp.attr("auto_pad", "NOTSET"))
    if inp.attr("output_shape") is not None or auto_pad not in ("NOTSET", "VALID"):
        raise Unsupported("ConvTranspose with output_shape or SAME padding")
    pads = list(inp.attr("pads") or [0] * (2 * n)) if auto_pad == "NOTSET" else [0] * (2 * n)
    geometry = kernels.TransposeGeometry(
        strides=tuple(inp.attr("strides") or [1] * n),
        dilations=tuple(inp.attr("dilations") or [1] * n),
        pads_begin=tuple(pads[:n]),
        pads_end=tuple(pads[n:]),
        output_padding=tuple(inp.attr("output_padding") or [0] * n),
    )
    group = int(inp.attr("group", 1))
    if w.ndim != len(x.shape) or group < 1 or x.shape[1] != w.shape[0] or w.shape[0] % group:
        raise Unsupported(f"weight {list(w.shape)} and group {group} do not fit the input {list(x.shape)}")
    if (
        min(geometry.strides + geometry.dilations, default=1) < 1
        or min(geometry.pads_begin + geometry.pads_end + geometry.output_padding, default=0) < 0
    ):
        raise Unsupported("invalid ConvTranspose geometry")
    full = [
        s * (size - 1) + (k - 1) * d + 1 + p
        for s, size, k, d, p in zip(
            geometry.strides, x.shape[2:], w.shape[2:], geometry.dilations, geometry.output_padding
        )
    ]
    check_size((x.shape[0], w.shape[1] * group, *full))
    bias = inp.weight(2).reshape(-1, *([1] * n)) if inp.has(2) else 0.0
    terms = int(w.shape[0] // group * np.prod(w.shape[2:]))
    return [linear(x, lambda a, k: kernels.conv_transpose(a, k, geometry, group), w, bias, terms, inp.domain)]


def _swap(array: np.ndarray) -> np.ndarray:
    return np.swapaxes(array, -1, -2)


@handles("Gemm")
def _gemm(inp: Inputs) -> Result:
    alpha, beta = float(inp.attr("alpha", 1.0)), float(inp.attr("beta", 1.0))
    trans_a, trans_b = bool(inp.attr("transA", 0)), bool(inp.attr("transB", 0))
    bias = beta * inp.weight(2) if inp.has(2) else 0.0
    a_value, b_value = inp.value(0), inp.value(1)
    if b_value is not None and a_value is None:
        x, w = inp.bound(0), alpha * np.asarray(b_value, np.float64)
        w = w.T if trans_b else w
        return [linear(x, lambda a, k: np.matmul(_swap(a) if trans_a else a, k), w, bias, w.shape[0], inp.domain)]
    if a_value is not None and b_value is None:
        x, w = inp.bound(1), alpha * np.asarray(a_value, np.float64)
        w = w.T if trans_a else w
        return [linear(x, lambda b, k: np.matmul(k, _swap(b) if trans_b else b), w, bias, w.shape[1], inp.domain)]
    raise Unsupported("Gemm of two computed tensors")


@handles("MatMul")
def _matmul(inp: Inputs) -> Result:
    a_value, b_value = inp.value(0), inp.value(1)
    if b_value is not None and a_value is None:
        x, w = inp.bound(0), np.asarray(b_value, np.float64)
        # Symbolic rows sit in front of the tensor's axes; a weight with batch axes would meet them.
        symbolic = w.ndim <= 2
        return [linear(x, np.matmul, w, 0.0, w.shape[-2], inp.domain, symbolic)]
    if a_value is not None and b_value is None:
        x, w = inp.bound(1), np.asarray(a_value, np.float64)
        symbolic = w.ndim <= 2 and x.lo.ndim >= 2
        return [linear(x, lambda b, k: np.matmul(k, b), w, 0.0, w.shape[-1], inp.domain, symbolic)]
    raise Unsupported("MatMul of two computed tensors")


@handles("BatchNormalization")
def _batchnorm(inp: Inputs) -> Result:
    if int(inp.attr("training_mode", 0)):
        raise Unsupported("BatchNormalization in training mode")
    x = inp.bound(0)
    scale, shift, mean, var = (inp.weight(i) for i in (1, 2, 3, 4))
    factor = scale / np.sqrt(var + float(inp.attr("epsilon", 1e-5)))
    axes = [1] * (len(x.shape) - 2)
    weight = factor.reshape(-1, *axes)
    bias = (shift - mean * factor).reshape(-1, *axes)
    return [linear(x, multiply, weight, bias, 4, inp.domain)] + [None] * (len(inp.node.outputs) - 1)


@handles("LayerNormalization", "InstanceNormalization")
def _normalization(inp: Inputs) -> Result:
    """Each normalized element z satisfies |z| <= sqrt(n - 1) whatever the input (n: elements normalized)."""
    x = inp.bound(0)
    ndim = len(x.shape)
    if inp.node.op == "LayerNormalization":
        axis = axis_index(int(inp.attr("axis", -1)), ndim)
        count = int(np.prod(x.shape[axis:]))
        scale = inp.weight(1)
        shift = inp.weight(2) if inp.has(2) else np.zeros(1)
    else:
        count = int(np.prod(x.shape[2:]))
        axes = [1] * (ndim - 2)
        scale, shift = inp.weight(1).reshape(-1, *axes), inp.weight(2).reshape(-1, *axes)
    reach = math.sqrt(max(count - 1, 0))
    spread = np.abs(scale) * reach
    shape = np.broadcast_shapes(x.shape, np.shape(scale), np.shape(shift))
    lo = np.broadcast_to(shift - spread, shape)
    hi = np.broadcast_to(shift + spread, shape)
    slack = rounding(np.abs(shift) + spread, 8)
    return [make(lo - slack, hi + slack, None, None)] + [None] * (len(inp.node.outputs) - 1)
