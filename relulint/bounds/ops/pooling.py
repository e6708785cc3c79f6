"""Bounds through pooling and reductions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from relulint.bounds import kernels
from relulint.bounds.interval import (
    Bound,
    Domain,
    Symbolic,
    make,
    rounding,
)
from relulint.bounds.ops.base import (
    Inputs,
    Result,
    axis_index,
    handles,
    window_attributes,
)


def positive_linear(x: Bound, f: Callable[[np.ndarray], np.ndarray], terms: int, domain: Domain | None) -> Bound:
    """A map linear in x with non-negative weights (averages, sums): monotone in every element."""
    with np.errstate(invalid="ignore"):
        lo, hi = f(x.lo), f(x.hi)
        slack_lo, slack_hi = rounding(f(np.abs(x.lo)), terms), rounding(f(np.abs(x.hi)), terms)
    lo, hi = lo - slack_lo, hi + slack_hi
    sym = None
    if x.sym is not None and domain is not None and domain.fits(lo.shape) and np.all(np.isfinite(lo + hi)):
        lower = np.stack([f(row) for row in x.sym.lower])
        upper = np.stack([f(row) for row in x.sym.upper])
        lower[0] -= slack_lo
        upper[0] += slack_hi
        sym = Symbolic(lower, upper)
    return make(lo, hi, sym, domain)


def _pool_geometry(inp: Inputs, spatial: tuple[int, ...]) -> kernels.Window:
    return window_attributes(inp, spatial, inp.attr("kernel_shape"))


@handles("MaxPool")
def _max_pool(inp: Inputs) -> Result:
    x = inp.bound(0)
    geometry = _pool_geometry(inp, x.shape[2:])
    lo, hi = kernels.max_pool(x.lo, geometry), kernels.max_pool(x.hi, geometry)
    return [make(lo, hi, None, None)] + [None] * (len(inp.node.outputs) - 1)


@handles("AveragePool")
def _average_pool(inp: Inputs) -> Result:
    x = inp.bound(0)
    spatial = x.shape[2:]
    geometry = _pool_geometry(inp, spatial)
    inside, with_pads = kernels.window_counts(spatial, geometry)
    divisor = with_pads if int(inp.attr("count_include_pad", 0)) else inside
    divisor = np.maximum(divisor, 1.0)
    terms = int(np.prod(geometry.kernel)) + 1
    return [positive_linear(x, lambda a: kernels.window_sum(a, geometry) / divisor, terms, inp.domain)]


@handles("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(inp: Inputs) -> Result:
    x = inp.bound(0)
    axes = tuple(range(2, len(x.shape)))
    if inp.node.op == "GlobalMaxPool":
        return [make(np.max(x.lo, axis=axes, keepdims=True), np.max(x.hi, axis=axes, keepdims=True), None, None)]
    terms = int(np.prod(x.shape[2:])) + 1
    return [
        positive_linear(
            x,
            lambda a: np.mean(a, axis=tuple(a.ndim - len(x.shape) + i for i in axes), keepdims=True),
            terms,
            inp.domain,
        )
    ]


@handles("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def _reduce(inp: Inputs) -> Result:
    x = inp.bound(0)
    ndim = len(x.shape)
    axes = inp.ints(1, "axes")
    if not axes:
        if int(inp.attr("noop_with_empty_axes", 0)):
            return [x]
        axes = list(range(ndim))
    axes = sorted(axis_index(a, ndim) for a in axes)
    keep = bool(inp.attr("keepdims", 1))
    op = inp.node.op
    if op in ("ReduceMax", "ReduceMin"):
        reduce = np.max if op == "ReduceMax" else np.min
        return [
            make(
                reduce(x.lo, axis=tuple(axes), keepdims=keep), reduce(x.hi, axis=tuple(axes), keepdims=keep), None, None
            )
        ]
    combine = np.mean if op == "ReduceMean" else np.sum
    terms = int(np.prod([x.shape[a] for a in axes])) + 1

    def apply(a: np.ndarray) -> np.ndarray:
        lead = a.ndim - ndim
        return combine(a, axis=tuple(lead + i for i in axes), keepdims=keep)

    return [positive_linear(x, apply, terms, inp.domain)]
