"""Bounds through elementwise ops: arithmetic, the ReLU family and the other activation functions, casts."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from relulint.bounds.interval import (
    Bound,
    Domain,
    Symbolic,
    as_symbolic,
    linear,
    make,
    monotone,
    multiply,
    relu_like,
    rounding,
    safe_product,
    sym_broadcast,
    valley,
)
from relulint.bounds.ops.base import (
    Inputs,
    Result,
    Unsupported,
    handles,
    scalar_value,
)


def _add(a: Bound, b: Bound, domain: Domain | None, sign: float = 1.0) -> Bound:
    """a + sign * b for two bounded tensors (broadcast)."""
    if b.value is not None:
        return linear(a, multiply, 1.0, sign * b.lo, 1, domain)
    if a.value is not None and sign > 0:
        return linear(b, multiply, 1.0, a.lo, 1, domain)
    if a.value is not None:
        return linear(b, multiply, -1.0, a.lo, 1, domain)
    b_lo, b_hi = (b.lo, b.hi) if sign > 0 else (-b.hi, -b.lo)
    lo, hi = a.lo + b_lo, a.hi + b_hi
    magnitude = np.maximum(np.abs(a.lo), np.abs(a.hi)) + np.maximum(np.abs(b.lo), np.abs(b.hi))
    slack = rounding(np.where(np.isfinite(magnitude), magnitude, 0.0), 0)
    sym = None
    sa, sb = as_symbolic(a, domain), as_symbolic(b, domain)
    if sa is not None and sb is not None and domain is not None and domain.fits(lo.shape):
        b_lower, b_upper = (sb.lower, sb.upper) if sign > 0 else (-sb.upper, -sb.lower)
        lower = sym_broadcast(sa.lower, lo.shape) + sym_broadcast(b_lower, lo.shape)
        upper = sym_broadcast(sa.upper, lo.shape) + sym_broadcast(b_upper, lo.shape)
        lower[0] -= slack
        upper[0] += slack
        sym = Symbolic(lower, upper)
    return make(lo - slack, hi + slack, sym, domain)


@handles("Add")
def _add_op(inp: Inputs) -> Result:
    return [_add(inp.bound(0), inp.bound(1), inp.domain)]


@handles("Sub")
def _sub_op(inp: Inputs) -> Result:
    return [_add(inp.bound(0), inp.bound(1), inp.domain, -1.0)]


@handles("Sum")
def _sum_op(inp: Inputs) -> Result:
    total = inp.bound(0)
    for index in range(1, len(inp.node.inputs)):
        total = _add(total, inp.bound(index), inp.domain)
    return [total]


def _product(a: Bound, b: Bound) -> Bound:
    corners = [safe_product(p, q) for p in (a.lo, a.hi) for q in (b.lo, b.hi)]
    lo, hi = np.minimum.reduce(corners), np.maximum.reduce(corners)
    magnitude = np.maximum(np.abs(lo), np.abs(hi))
    slack = rounding(np.where(np.isfinite(magnitude), magnitude, 0.0), 0)
    return make(lo - slack, hi + slack, None, None)


@handles("Mul")
def _mul(inp: Inputs) -> Result:
    a, b = inp.bound(0), inp.bound(1)
    if b.value is not None and a.value is None:
        return [linear(a, multiply, b.lo, 0.0, 1, inp.domain)]
    if a.value is not None and b.value is None:
        return [linear(b, multiply, a.lo, 0.0, 1, inp.domain)]
    return [_product(a, b)]


def _reciprocal(b: Bound) -> Bound:
    if np.any((b.lo <= 0) & (b.hi >= 0)):
        raise Unsupported("a divisor whose range contains zero")
    with np.errstate(divide="ignore"):
        lo, hi = 1.0 / b.hi, 1.0 / b.lo
    return make(lo - rounding(np.abs(lo), 0), hi + rounding(np.abs(hi), 0), None, None)


@handles("Div")
def _div(inp: Inputs) -> Result:
    a, b = inp.bound(0), inp.bound(1)
    if b.value is not None and a.value is None:
        if np.any(b.lo == 0):
            raise Unsupported("division by zero")
        return [linear(a, multiply, 1.0 / b.lo, 0.0, 2, inp.domain)]
    return [_product(a, _reciprocal(b))]


@handles("Neg")
def _neg(inp: Inputs) -> Result:
    return [linear(inp.bound(0), multiply, -1.0, 0.0, 0, inp.domain)]


@handles("Reciprocal")
def _reciprocal_op(inp: Inputs) -> Result:
    return [_reciprocal(inp.bound(0))]


# ---- the ReLU family and other elementwise functions ----------------------------------------
def kinked(x: Bound, f: Callable[[np.ndarray], np.ndarray]) -> Bound:
    """A piecewise-linear op with one kink at 0 and f(0) = 0: its range on [l, u] is spanned by f(l), f(u), 0."""
    a, b = f(x.lo), f(x.hi)
    straddles = (x.lo < 0) & (x.hi > 0)
    lo = np.where(straddles, np.minimum(np.minimum(a, b), 0.0), np.minimum(a, b))
    hi = np.where(straddles, np.maximum(np.maximum(a, b), 0.0), np.maximum(a, b))
    return make(lo - rounding(np.abs(lo), 0), hi + rounding(np.abs(hi), 0), None, None)


@handles("Relu")
def _relu(inp: Inputs) -> Result:
    return [relu_like(inp.bound(0), 0.0, inp.domain)]


@handles("LeakyRelu")
def _leaky(inp: Inputs) -> Result:
    alpha = float(inp.attr("alpha", 0.01))
    x = inp.bound(0)
    if alpha >= 0:
        return [relu_like(x, alpha, inp.domain)]
    return [kinked(x, lambda v: np.where(v >= 0, v, safe_product(alpha, v)))]


@handles("PRelu")
def _prelu(inp: Inputs) -> Result:
    x, slope = inp.bound(0), inp.weight(1)
    if np.all(slope >= 0):
        return [relu_like(x, slope, inp.domain)]
    shape = np.broadcast_shapes(x.shape, slope.shape)
    lo, hi = np.broadcast_to(x.lo, shape), np.broadcast_to(x.hi, shape)
    return [kinked(Bound(lo, hi), lambda v: np.where(v >= 0, v, safe_product(np.broadcast_to(slope, shape), v)))]


def clip_limits(inp: Inputs) -> tuple[float | None, float | None]:
    if inp.opset < 11:
        low, high = inp.attr("min"), inp.attr("max")
    else:
        low = scalar_value(inp.value(1)) if inp.has(1) else None
        high = scalar_value(inp.value(2)) if inp.has(2) else None
        if (inp.has(1) and low is None) or (inp.has(2) and high is None):
            raise Unsupported("Clip with a computed limit")
    return (None if low is None else float(low)), (None if high is None else float(high))


@handles("Clip")
def _clip(inp: Inputs) -> Result:
    x = inp.bound(0)
    low, high = clip_limits(inp)
    if low == 0.0 and high is None:
        return [relu_like(x, 0.0, inp.domain)]
    lo, hi = x.lo, x.hi
    if low is not None:
        lo, hi = np.maximum(lo, low), np.maximum(hi, low)
    if high is not None:
        lo, hi = np.minimum(lo, high), np.minimum(hi, high)
    return [make(lo, hi, None, None)]


@handles("Max", "Min")
def _max_min(inp: Inputs) -> Result:
    args = [inp.bound(i) for i in range(len(inp.node.inputs)) if inp.has(i)]
    if inp.node.op == "Max" and len(args) == 2:
        for x, other in ((args[0], args[1]), (args[1], args[0])):
            if other.value is not None and x.value is None and np.all(other.lo == 0) and other.lo.size <= x.lo.size:
                return [relu_like(x, 0.0, inp.domain)]
    reduce = np.maximum if inp.node.op == "Max" else np.minimum
    lo, hi = args[0].lo, args[0].hi
    for arg in args[1:]:
        lo, hi = reduce(lo, arg.lo), reduce(hi, arg.hi)
    return [make(lo, hi, None, None)]


@handles("ThresholdedRelu")
def _thresholded(inp: Inputs) -> Result:
    x, alpha = inp.bound(0), float(inp.attr("alpha", 1.0))
    lo = np.where(x.lo > alpha, x.lo, np.minimum(0.0, np.where(x.hi > alpha, alpha, 0.0)))
    hi = np.where(x.hi > alpha, np.where(x.lo > alpha, x.hi, np.maximum(x.hi, 0.0)), 0.0)
    return [make(lo, hi, None, None)]


def _erf(v: np.ndarray) -> np.ndarray:
    return np.frompyfunc(math.erf, 1, 1)(v).astype(np.float64)


def _softplus(v: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, v)


def _elu(alpha: float, scale: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    return lambda v: scale * np.where(v > 0, v, alpha * np.expm1(np.minimum(v, 0.0)))


def _celu(alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda v: np.maximum(v, 0.0) + np.minimum(0.0, alpha * np.expm1(np.minimum(v, 0.0) / alpha))


def _hard_sigmoid(alpha: float, beta: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda v: np.clip(alpha * v + beta, 0.0, 1.0)


MONOTONE: dict[str, Callable[[Inputs], Callable[[np.ndarray], np.ndarray]]] = {
    "Sigmoid": lambda inp: lambda v: 1.0 / (1.0 + np.exp(-v)),
    "Tanh": lambda inp: np.tanh,
    "Softplus": lambda inp: _softplus,
    "Softsign": lambda inp: lambda v: v / (1.0 + np.abs(v)),
    "Exp": lambda inp: np.exp,
    "Erf": lambda inp: _erf,
    "Atan": lambda inp: np.arctan,
    "Asinh": lambda inp: np.arcsinh,
    "Sinh": lambda inp: np.sinh,
    "Floor": lambda inp: np.floor,
    "Ceil": lambda inp: np.ceil,
    "Round": lambda inp: np.round,
    "Sign": lambda inp: np.sign,
    "Identity": lambda inp: lambda v: v,
    "Elu": lambda inp: _elu(float(inp.attr("alpha", 1.0))),
    "Selu": lambda inp: _elu(
        float(inp.attr("alpha", 1.67326319217681884765625)), float(inp.attr("gamma", 1.05070102214813232421875))
    ),
    "Celu": lambda inp: _celu(float(inp.attr("alpha", 1.0))),
    "HardSigmoid": lambda inp: _hard_sigmoid(float(inp.attr("alpha", 0.2)), float(inp.attr("beta", 0.5))),
}
# Ops defined on part of the line: (function, lowest input it accepts without NaN or infinity).
PARTIAL: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float, bool]] = {
    "Sqrt": (np.sqrt, 0.0, True),  # (f, domain start, start included)
    "Log": (np.log, 0.0, False),
}


@handles(*MONOTONE)
def _monotone(inp: Inputs) -> Result:
    op = inp.node.op
    if op in ("Elu", "Celu") and float(inp.attr("alpha", 1.0)) < 0:
        raise Unsupported(f"{op} with a negative alpha")
    if op == "HardSigmoid" and float(inp.attr("alpha", 0.2)) < 0:
        raise Unsupported("HardSigmoid with a negative alpha")
    x = inp.bound(0)
    if op == "Identity":
        return [x]
    return [monotone(x, MONOTONE[op](inp))]


@handles(*PARTIAL)
def _partial(inp: Inputs) -> Result:
    f, start, included = PARTIAL[inp.node.op]
    x = inp.bound(0)
    if np.any(x.lo < start) or (not included and np.any(x.lo <= start)):
        raise Unsupported(f"{inp.node.op} of a range reaching outside its domain")
    return [monotone(x, f)]


def _gelu(v: np.ndarray) -> np.ndarray:
    return np.where(np.isneginf(v), 0.0, 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0))))


def _mish(v: np.ndarray) -> np.ndarray:
    return np.where(np.isneginf(v), 0.0, v * np.tanh(_softplus(v)))


def _hardswish(v: np.ndarray) -> np.ndarray:
    return np.where(np.isneginf(v), 0.0, v * np.clip(v + 3.0, 0.0, 6.0) / 6.0)


# op -> (function, interval holding its minimizer, a value at or below its minimum)
VALLEYS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], tuple[float, float], float]] = {
    "Gelu": (_gelu, (-0.76, -0.74), -0.1701),  # the tanh approximation stays within 5e-4 of it
    "Mish": (_mish, (-1.2, -1.18), -0.3089),
    "HardSwish": (_hardswish, (-1.5, -1.5), -0.375),
    "Abs": (np.abs, (0.0, 0.0), 0.0),
}


@handles(*VALLEYS)
def _valley(inp: Inputs) -> Result:
    f, argmin, minimum = VALLEYS[inp.node.op]
    relative = 1e-3 if inp.node.op == "Gelu" else 1e-6  # covers Gelu's tanh approximation
    return [valley(inp.bound(0), f, argmin, minimum, relative)]


@handles("Softmax")
def _softmax(inp: Inputs) -> Result:
    x = inp.bound(0)
    return [make(np.zeros(x.shape), np.ones(x.shape), None, None)]


@handles("LogSoftmax")
def _log_softmax(inp: Inputs) -> Result:
    x = inp.bound(0)
    return [make(np.full(x.shape, -np.inf), np.zeros(x.shape), None, None)]


@handles("Dropout")
def _dropout(inp: Inputs) -> Result:
    return [inp.bound(0)] + [None] * (len(inp.node.outputs) - 1)


@handles("Cast")
def _cast(inp: Inputs) -> Result:
    x = inp.bound(0)
    if x.value is not None:
        raise Unsupported("exact")  # the reference evaluator handles constant casts
    target = int(inp.attr("to", 1))
    import onnx

    dtype = onnx.helper.tensor_dtype_to_np_dtype(target)
    if dtype.kind == "f":
        return [monotone(x, lambda v: v, relative=float(np.finfo(dtype).eps))]
    if dtype.kind in "iu":
        return [monotone(x, np.trunc, relative=0.0)]
    raise Unsupported(f"Cast to {dtype}")
