"""Bounds through ops that move or select data (reshapes, slices, concatenation, gathers, pads, shapes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from relulint.bounds.interval import (
    Symbolic,
    as_symbolic,
    exact,
    make,
    structural,
)
from relulint.bounds.ops.base import (
    Inputs,
    Result,
    Unsupported,
    attribute_text,
    axis_index,
    check_size,
    handles,
    scalar_value,
)


def _move(inp: Inputs, move: Callable[[np.ndarray, int], np.ndarray]) -> Result:
    return [structural(inp.bound(0), move, inp.domain)]


@handles("Reshape")
def _reshape(inp: Inputs) -> Result:
    x = inp.bound(0)
    target = inp.ints(1, "shape")
    if target is None:
        raise Unsupported("Reshape without a constant shape")
    allow_zero = int(inp.attr("allowzero", 0))
    shape = [x.shape[i] if (d == 0 and not allow_zero and i < len(x.shape)) else d for i, d in enumerate(target)]
    resolved = np.empty(x.shape).reshape(shape).shape
    return _move(inp, lambda a, lead: a.reshape(*a.shape[:lead], *resolved))


@handles("Flatten")
def _flatten(inp: Inputs) -> Result:
    x = inp.bound(0)
    axis = axis_index(int(inp.attr("axis", 1)), len(x.shape))
    outer = int(np.prod(x.shape[:axis]))
    return _move(inp, lambda a, lead: a.reshape(*a.shape[:lead], outer, -1))


@handles("Squeeze", "Unsqueeze")
def _squeeze(inp: Inputs) -> Result:
    x = inp.bound(0)
    axes = inp.ints(1, "axes")
    if inp.node.op == "Squeeze":
        ndim = len(x.shape)
        axes = [i for i, d in enumerate(x.shape) if d == 1] if not axes else [axis_index(a, ndim) for a in axes]
        shape = [d for i, d in enumerate(x.shape) if i not in axes]
    else:
        ndim = len(x.shape) + len(axes or [])
        shape = list(x.shape)
        for axis in sorted(axis_index(a, ndim) for a in axes or []):
            shape.insert(axis, 1)
    return _move(inp, lambda a, lead: a.reshape(*a.shape[:lead], *shape))


@handles("Transpose")
def _transpose(inp: Inputs) -> Result:
    ndim = len(inp.bound(0).shape)
    perm = list(inp.attr("perm") or reversed(range(ndim)))
    return _move(inp, lambda a, lead: np.transpose(a, [*range(lead), *(lead + p for p in perm)]))


@handles("Slice")
def _slice(inp: Inputs) -> Result:
    x = inp.bound(0)
    ndim = len(x.shape)
    if inp.opset < 10:
        starts, ends, axes, steps = inp.attr("starts"), inp.attr("ends"), inp.attr("axes"), None
    else:
        starts, ends, axes, steps = inp.ints(1), inp.ints(2), inp.ints(3), inp.ints(4)
    axes = list(axes) if axes else list(range(len(starts)))
    steps = list(steps) if steps else [1] * len(starts)
    index = [slice(None)] * ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis_index(axis, ndim)] = slice(*slice(start, end, step).indices(x.shape[axis_index(axis, ndim)]))
    return _move(inp, lambda a, lead: a[(*([slice(None)] * lead), *index)])


@handles("Concat")
def _concat(inp: Inputs) -> Result:
    args = [inp.bound(i) for i in range(len(inp.node.inputs)) if inp.has(i)]
    ndim = len(args[0].shape)
    axis = axis_index(int(inp.attr("axis")), ndim)
    lo = np.concatenate([a.lo for a in args], axis=axis)
    hi = np.concatenate([a.hi for a in args], axis=axis)
    domain, sym = inp.domain, None
    if domain is not None and any(a.sym is not None for a in args) and domain.fits(lo.shape):
        forms = [form for a in args if (form := as_symbolic(a, domain)) is not None]
        if len(forms) == len(args):
            sym = Symbolic(
                np.concatenate([f.lower for f in forms], axis=axis + 1),
                np.concatenate([f.upper for f in forms], axis=axis + 1),
            )
    bound = make(lo, hi, sym, domain)
    if all(a.value is not None for a in args):
        bound.value = np.concatenate([a.value for a in args], axis=axis)
    return [bound]


@handles("Split")
def _split(inp: Inputs) -> Result:
    x = inp.bound(0)
    ndim = len(x.shape)
    axis = axis_index(int(inp.attr("axis", 0)), ndim)
    sizes = inp.ints(1, "split")
    count = len(inp.node.outputs)
    if not sizes:
        total = x.shape[axis]
        step = -(-total // count)
        sizes = [min(step, total - i * step) for i in range(count)]
    results: Result = []
    start = 0
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        results.append(structural(x, _part(index), inp.domain))
        start += size
    return results


def _part(index: tuple[slice, ...]) -> Callable[[np.ndarray, int], np.ndarray]:
    """The map that takes ``index`` on the axes after the ``lead`` ones (one output of a Split)."""
    return lambda a, lead: a[(*([slice(None)] * lead), *index)]


@handles("Gather")
def _gather(inp: Inputs) -> Result:
    indices = inp.value(1)
    if indices is None:
        raise Unsupported("Gather with computed indices")
    x = inp.bound(0)
    axis = axis_index(int(inp.attr("axis", 0)), len(x.shape))
    indices = np.asarray(indices, np.int64)
    return _move(inp, lambda a, lead: np.take(a, indices, axis=axis + lead))


@handles("Expand")
def _expand(inp: Inputs) -> Result:
    x = inp.bound(0)
    target = inp.required_ints(1)
    shape = np.broadcast_shapes(x.shape, tuple(target))
    check_size(shape)
    return _move(
        inp,
        lambda a, lead: np.broadcast_to(
            a.reshape(*a.shape[:lead], *([1] * (len(shape) - len(x.shape))), *x.shape), (*a.shape[:lead], *shape)
        ),
    )


@handles("Tile")
def _tile(inp: Inputs) -> Result:
    repeats = inp.required_ints(1)
    check_size([d * r for d, r in zip(inp.bound(0).shape, repeats)])
    return _move(inp, lambda a, lead: np.tile(a, [1] * lead + list(repeats)))


@handles("Pad")
def _pad(inp: Inputs) -> Result:
    x = inp.bound(0)
    ndim = len(x.shape)
    mode = attribute_text(inp.attr("mode", "constant"))
    pads = inp.required_ints(1, "pads")
    if inp.opset >= 18 and inp.has(3):
        axes = [axis_index(a, ndim) for a in inp.required_ints(3)]
    else:
        axes = list(range(ndim))
    widths = [(0, 0)] * ndim
    for i, axis in enumerate(axes):
        widths[axis] = (pads[i], pads[i + len(axes)])
    if any(b < 0 or e < 0 for b, e in widths):
        raise Unsupported("Pad with negative pads")
    check_size([d + b + e for d, (b, e) in zip(x.shape, widths)])
    if mode == "constant":
        fill = scalar_value(inp.value(2)) if inp.has(2) else float(inp.attr("value", 0.0))
        if fill is None:
            raise Unsupported("Pad with a computed value")
        lo = np.pad(x.lo, widths, constant_values=fill)
        hi = np.pad(x.hi, widths, constant_values=fill)
        sym = None
        if x.sym is not None and inp.domain is not None and inp.domain.fits(lo.shape):
            lower = np.pad(x.sym.lower, [(0, 0), *widths])
            upper = np.pad(x.sym.upper, [(0, 0), *widths])
            lower[0], upper[0] = (
                np.pad(x.sym.lower[0], widths, constant_values=fill),
                np.pad(x.sym.upper[0], widths, constant_values=fill),
            )
            sym = Symbolic(lower, upper)
        return [make(lo, hi, sym, inp.domain)]
    modes: dict[str, Literal["reflect", "edge", "wrap"]] = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}
    numpy_mode = modes.get(mode)
    if numpy_mode is None:
        raise Unsupported(f"Pad mode {mode}")
    return _move(inp, lambda a, lead: np.pad(a, [(0, 0)] * lead + widths, mode=numpy_mode))


@handles("Shape")
def _shape(inp: Inputs) -> Result:
    x = inp.bound(0)
    shape = np.array(x.shape, np.int64)
    start, end = inp.attr("start"), inp.attr("end")
    return [exact(shape[slice(start, end)])]


@handles("Size")
def _size(inp: Inputs) -> Result:
    return [exact(np.array(int(np.prod(inp.bound(0).shape)), np.int64))]
