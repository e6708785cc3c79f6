"""Bound propagation through one ONNX op: a handler per op type.

A handler takes an ``Inputs`` (the node, its inputs' bounds and exact values) and returns one bound
per output, or None for an output it cannot bound. An op with no handler, or whose handler gives up
(a non-constant weight, an attribute it does not model), makes its outputs unbounded: the propagation
stays sound, it only proves less.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from relulint.bounds import kernels
from relulint.bounds.interval import (
    Bound,
    Domain,
    Symbolic,
    as_symbolic,
    exact,
    linear,
    make,
    monotone,
    multiply,
    relu_like,
    rounding,
    safe_product,
    structural,
    sym_broadcast,
    valley,
)
from relulint.graph import Graph, Node

Result = list[Bound | None]
# Largest tensor bounded (elements of one sample): lo and hi are float64, so 32 MB each, and an op's
# temporaries are several times that (a chain of 3x3 Convs at 1990x1990 peaked at 500 MB; at 16 million
# elements, 1.8 GB). Larger tensors (and hostile shapes) are left unbounded instead of exhausting memory.
MAX_ELEMENTS = 4_000_000


class Unsupported(Exception):
    """This node (or this use of its op) is not modelled: its outputs become unbounded."""


@dataclass
class Inputs:
    node: Node
    graph: Graph
    bounds: dict[str, Bound]
    domain: Domain | None
    opset: int

    def has(self, index: int) -> bool:
        return index < len(self.node.inputs) and bool(self.node.inputs[index])

    def bound(self, index: int) -> Bound:
        tensor = self.node.inputs[index] if self.has(index) else ""
        if tensor in self.bounds:
            return self.bounds[tensor]
        value = self.graph.constant(tensor) if tensor and self.graph.is_constant(tensor) else None
        if value is None:
            raise Unsupported(f"input {index} is not bounded")
        return exact(value)

    def value(self, index: int) -> np.ndarray | None:
        """The input's exact value (constants, shapes), or None when it is computed."""
        if not self.has(index):
            return None
        tensor = self.node.inputs[index]
        if tensor in self.bounds:
            return self.bounds[tensor].value
        return self.graph.constant(tensor) if self.graph.is_constant(tensor) else None

    def weight(self, index: int) -> np.ndarray:
        value = self.value(index)
        if value is None:
            raise Unsupported(f"input {index} is not a constant")
        return np.asarray(value, np.float64)

    def ints(self, index: int, attribute: str | None = None) -> list[int] | None:
        """An int list given as an input (newer opsets) or an attribute (older ones)."""
        if self.has(index):
            value = self.value(index)
            if value is None:
                raise Unsupported(f"input {index} is not a constant")
            return [int(v) for v in np.asarray(value).reshape(-1)]
        if attribute is not None:
            given = self.node.attr(attribute)
            return None if given is None else [int(v) for v in given]
        return None

    def attr(self, name: str, default=None):
        return self.node.attr(name, default)


Handler = Callable[[Inputs], Result]
HANDLERS: dict[str, Handler] = {}


def handles(*ops: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = handler
        return handler

    return register


def _axis(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


def check_size(shape, what: str = "output") -> None:
    """Refuse to build a bound larger than MAX_ELEMENTS (or with a negative dimension)."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise Unsupported(f"{what} shape {dims} has a negative dimension")
    if math.prod(dims) > MAX_ELEMENTS:
        raise Unsupported(f"{what} of {math.prod(dims):,} elements is over the {MAX_ELEMENTS:,} bounded")


def _window_attributes(inp: Inputs, spatial: tuple[int, ...], kernel) -> kernels.Window:
    """Conv/pool geometry, refusing what ONNX forbids (zero strides, negative pads) and huge outputs."""
    n = len(spatial)
    kernel = list(kernel or [])
    strides, dilations, pads = inp.attr("strides"), inp.attr("dilations"), inp.attr("pads")
    if len(kernel) != n or any(k < 1 for k in kernel):
        raise Unsupported(f"kernel {kernel} does not fit {n} spatial axes")
    for name, values, size in (("strides", strides, n), ("dilations", dilations, n), ("pads", pads, 2 * n)):
        if values is not None and (len(values) != size or any(v < (0 if name == "pads" else 1) for v in values)):
            raise Unsupported(f"invalid {name} {list(values)}")
    if pads is not None:
        check_size([s + pads[i] + pads[i + n] for i, s in enumerate(spatial)], "padded input")
    geometry = kernels.window(
        spatial, kernel, strides, dilations, pads, _text(inp.attr("auto_pad", "NOTSET")), bool(inp.attr("ceil_mode", 0))
    )
    check_size(geometry.out, "window output")
    return geometry


# ---- linear ops ------------------------------------------------------------------------------
@handles("Conv")
def _conv(inp: Inputs) -> Result:
    x, w = inp.bound(0), inp.weight(1)
    spatial = x.shape[2:]
    group = int(inp.attr("group", 1))
    if w.ndim != len(x.shape) or group < 1 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise Unsupported(f"weight {list(w.shape)} and group {group} do not fit the input {list(x.shape)}")
    geometry = _window_attributes(inp, spatial, w.shape[2:])
    check_size((x.shape[0], w.shape[0], *geometry.out))
    bias = inp.weight(2).reshape(-1, *([1] * len(spatial))) if inp.has(2) else 0.0
    terms = int(np.prod(w.shape[1:]))
    return [linear(x, lambda a, k: kernels.conv(a, k, geometry, group), w, bias, terms, inp.domain)]


@handles("ConvTranspose")
def _conv_transpose(inp: Inputs) -> Result:
    x, w = inp.bound(0), inp.weight(1)
    n = w.ndim - 2
    auto_pad = _text(inp.attr("auto_pad", "NOTSET"))
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
        axis = _axis(int(inp.attr("axis", -1)), ndim)
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


# ---- elementwise arithmetic ------------------------------------------------------------------
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
        low = _scalar(inp.value(1)) if inp.has(1) else None
        high = _scalar(inp.value(2)) if inp.has(2) else None
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


# ---- pooling and reductions ------------------------------------------------------------------
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
    return _window_attributes(inp, spatial, inp.attr("kernel_shape"))


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
    axes = sorted(_axis(a, ndim) for a in axes)
    keep = bool(inp.attr("keepdims", 1))
    op = inp.node.op
    if op in ("ReduceMax", "ReduceMin"):
        reduce = np.max if op == "ReduceMax" else np.min
        return [
            make(
                reduce(x.lo, axis=tuple(axes), keepdims=keep), reduce(x.hi, axis=tuple(axes), keepdims=keep), None, None
            )
        ]
    reduce = np.mean if op == "ReduceMean" else np.sum
    terms = int(np.prod([x.shape[a] for a in axes])) + 1

    def apply(a: np.ndarray) -> np.ndarray:
        lead = a.ndim - ndim
        return reduce(a, axis=tuple(lead + i for i in axes), keepdims=keep)

    return [positive_linear(x, apply, terms, inp.domain)]


# ---- moving data -----------------------------------------------------------------------------
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
    axis = _axis(int(inp.attr("axis", 1)), len(x.shape))
    outer = int(np.prod(x.shape[:axis]))
    return _move(inp, lambda a, lead: a.reshape(*a.shape[:lead], outer, -1))


@handles("Squeeze", "Unsqueeze")
def _squeeze(inp: Inputs) -> Result:
    x = inp.bound(0)
    axes = inp.ints(1, "axes")
    if inp.node.op == "Squeeze":
        ndim = len(x.shape)
        axes = [i for i, d in enumerate(x.shape) if d == 1] if not axes else [_axis(a, ndim) for a in axes]
        shape = [d for i, d in enumerate(x.shape) if i not in axes]
    else:
        ndim = len(x.shape) + len(axes or [])
        shape = list(x.shape)
        for axis in sorted(_axis(a, ndim) for a in axes or []):
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
        index[_axis(axis, ndim)] = slice(*slice(start, end, step).indices(x.shape[_axis(axis, ndim)]))
    return _move(inp, lambda a, lead: a[(*([slice(None)] * lead), *index)])


@handles("Concat")
def _concat(inp: Inputs) -> Result:
    args = [inp.bound(i) for i in range(len(inp.node.inputs)) if inp.has(i)]
    ndim = len(args[0].shape)
    axis = _axis(int(inp.attr("axis")), ndim)
    lo = np.concatenate([a.lo for a in args], axis=axis)
    hi = np.concatenate([a.hi for a in args], axis=axis)
    domain, sym = inp.domain, None
    if domain is not None and any(a.sym is not None for a in args) and domain.fits(lo.shape):
        forms = [as_symbolic(a, domain) for a in args]
        if all(f is not None for f in forms):
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
    axis = _axis(int(inp.attr("axis", 0)), ndim)
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
        results.append(structural(x, lambda a, lead, index=index: a[(*([slice(None)] * lead), *index)], inp.domain))
        start += size
    return results


@handles("Gather")
def _gather(inp: Inputs) -> Result:
    indices = inp.value(1)
    if indices is None:
        raise Unsupported("Gather with computed indices")
    x = inp.bound(0)
    axis = _axis(int(inp.attr("axis", 0)), len(x.shape))
    indices = np.asarray(indices, np.int64)
    return _move(inp, lambda a, lead: np.take(a, indices, axis=axis + lead))


@handles("Expand")
def _expand(inp: Inputs) -> Result:
    x = inp.bound(0)
    target = inp.ints(1)
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
    repeats = inp.ints(1)
    check_size([d * r for d, r in zip(inp.bound(0).shape, repeats)])
    return _move(inp, lambda a, lead: np.tile(a, [1] * lead + list(repeats)))


@handles("Pad")
def _pad(inp: Inputs) -> Result:
    x = inp.bound(0)
    ndim = len(x.shape)
    mode = _text(inp.attr("mode", "constant"))
    pads = inp.ints(1, "pads")
    if inp.opset >= 18 and inp.has(3):
        axes = [_axis(a, ndim) for a in inp.ints(3)]
    else:
        axes = list(range(ndim))
    widths = [(0, 0)] * ndim
    for i, axis in enumerate(axes):
        widths[axis] = (pads[i], pads[i + len(axes)])
    if any(b < 0 or e < 0 for b, e in widths):
        raise Unsupported("Pad with negative pads")
    check_size([d + b + e for d, (b, e) in zip(x.shape, widths)])
    if mode == "constant":
        fill = _scalar(inp.value(2)) if inp.has(2) else float(inp.attr("value", 0.0))
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
    numpy_mode = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}.get(mode)
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


def _scalar(value: np.ndarray | None) -> float | None:
    if value is None or np.size(value) != 1:
        return None
    return float(np.asarray(value).reshape(-1)[0])


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
