"""Sound bounds on a tensor: an elementwise interval, and optionally linear bounds in the input variables.

A ``Bound`` holds ``lo <= t <= hi`` elementwise (float64, the tensor's shape with batch 1). Infinite
bounds mean "unbounded": ``lo`` is finite or ``-inf`` and ``hi`` finite or ``+inf``, never the other way,
so sums never meet ``inf - inf``. ``value`` is set when the tensor is known exactly (constants, shapes).

A ``Symbolic`` bound holds two affine functions of the input variables ``v`` (the elements of the ranged
inputs, ``v_i`` in ``[v_lo_i, v_hi_i]``): ``lower·[1, v] <= t <= upper·[1, v]``. Its arrays have one row
per coefficient in front of the tensor's shape (row 0 is the constant term). Through a chain of linear
ops these bounds are exact, where intervals lose every correlation between the elements; every op's
result is the intersection of both.

Rounding: the network runs in float32 and these bounds are computed in float64. Every op that sums
``n`` products widens its bounds by ``(n + 2) · 2⁻²³ · Σ|w·x|`` (twice the classic worst case of a float32
sum of n terms), so a unit proven dead is dead in float32 too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FLOAT32_UNIT = 2.0**-23  # twice float32's unit roundoff: headroom for fused or reordered sums
Apply = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (input, weight) -> linear op without bias


@dataclass
class Symbolic:
    lower: np.ndarray  # [1 + variables, *shape]
    upper: np.ndarray

    @property
    def rows(self) -> int:
        return self.lower.shape[0]


@dataclass
class Domain:
    """The input variables' box: the elements of every input given a finite range."""

    lo: np.ndarray  # [variables]
    hi: np.ndarray
    budget: int  # largest symbolic array (rows x elements) kept; larger tensors fall back to intervals

    @property
    def variables(self) -> int:
        return int(self.lo.size)

    def concretize(self, sym: Symbolic) -> tuple[np.ndarray, np.ndarray]:
        """The interval the affine bounds imply over the box (center/radius form)."""
        center = (self.lo + self.hi) / 2.0
        radius = (self.hi - self.lo) / 2.0
        lower, upper = sym.lower, sym.upper
        flat_l = lower[1:].reshape(lower.shape[0] - 1, -1)
        flat_u = upper[1:].reshape(upper.shape[0] - 1, -1)
        lo = lower[0].reshape(-1) + center @ flat_l - radius @ np.abs(flat_l)
        hi = upper[0].reshape(-1) + center @ flat_u + radius @ np.abs(flat_u)
        return lo.reshape(lower.shape[1:]), hi.reshape(upper.shape[1:])

    def fits(self, shape: tuple[int, ...]) -> bool:
        return (self.variables + 1) * int(np.prod(shape, dtype=np.int64)) <= self.budget


@dataclass
class Bound:
    lo: np.ndarray
    hi: np.ndarray
    sym: Symbolic | None = None
    value: np.ndarray | None = None  # the exact value (any dtype) when known

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.lo.shape)

    @property
    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.lo)) and np.all(np.isfinite(self.hi)))


def exact(value: np.ndarray) -> Bound:
    array = np.asarray(value)
    as_float = array.astype(np.float64) if array.dtype.kind in "fiub" else np.zeros(array.shape)
    return Bound(as_float, as_float.copy(), value=array)


def unbounded(shape: tuple[int, ...]) -> Bound:
    """No bound at all: read-only views of one infinity each, so an unbounded tensor of 16 million
    elements costs nothing (no op writes into its inputs' bounds)."""
    return Bound(np.broadcast_to(np.float64(-np.inf), shape), np.broadcast_to(np.float64(np.inf), shape))


def normalized(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widen NaN and wrong-way infinities to unbounded: lo is never +inf, hi never -inf."""
    lo = np.where(np.isnan(lo) | (lo == np.inf), -np.inf, lo)
    hi = np.where(np.isnan(hi) | (hi == -np.inf), np.inf, hi)
    return lo, hi


def make(lo: np.ndarray, hi: np.ndarray, sym: Symbolic | None, domain: Domain | None) -> Bound:
    """A bound from an interval and optional symbolic bounds: their intersection."""
    lo, hi = normalized(np.asarray(lo, np.float64), np.asarray(hi, np.float64))
    if sym is not None and domain is not None:
        if not (np.all(np.isfinite(sym.lower)) and np.all(np.isfinite(sym.upper))):
            sym = None
        else:
            s_lo, s_hi = domain.concretize(sym)
            lo, hi = np.maximum(lo, s_lo), np.minimum(hi, s_hi)
    return Bound(lo, hi, sym)


def as_symbolic(bound: Bound, domain: Domain | None) -> Symbolic | None:
    """The bound's symbolic form, or a constant one made from a finite interval."""
    if bound.sym is not None:
        return bound.sym
    if domain is None or not bound.finite or not domain.fits(bound.shape):
        return None
    lower = np.zeros((domain.variables + 1, *bound.shape))
    upper = np.zeros_like(lower)
    lower[0], upper[0] = bound.lo, bound.hi
    return Symbolic(lower, upper)


def sym_broadcast(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast a symbolic array [rows, *s] to [rows, *shape] (numpy aligns the tensor axes)."""
    tensor_shape = array.shape[1:]
    if tensor_shape == tuple(shape):
        return array
    extra = len(shape) - len(tensor_shape)
    array = array.reshape(array.shape[0], *([1] * extra), *tensor_shape)
    return np.broadcast_to(array, (array.shape[0], *shape))


def safe_product(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """a * b where 0 * inf counts as 0: a bound's infinity stands for a large but finite number."""
    with np.errstate(invalid="ignore"):
        product = a * b
    return np.where((a == 0) | (b == 0), 0.0, product)


def rounding(magnitude: np.ndarray, terms: int) -> np.ndarray:
    """Worst-case float32 error of a sum of ``terms`` products whose absolute values sum to ``magnitude``."""
    return (terms + 2) * FLOAT32_UNIT * magnitude


def linear(
    x: Bound,
    apply: Apply,
    weight: np.ndarray | float,
    bias: np.ndarray | float,
    terms: int,
    domain: Domain | None,
    symbolic: bool = True,
) -> Bound:
    """Bounds of ``apply(x, weight) + bias`` for a map linear in x (Conv, Gemm, MatMul, a constant scale)."""
    weight = np.asarray(weight, np.float64)
    bias = np.asarray(bias, np.float64)
    abs_w = np.abs(weight)
    # Infinite ends are handled below; in the finite part they take the other end's value (or 0), so
    # that the radius stays >= 0 and the finite end is still used where the weight's sign picks it.
    finite_lo = np.where(np.isfinite(x.lo), x.lo, np.where(np.isfinite(x.hi), x.hi, 0.0))
    finite_hi = np.where(np.isfinite(x.hi), x.hi, finite_lo)
    center, radius = (finite_lo + finite_hi) / 2.0, (finite_hi - finite_lo) / 2.0
    y_center = apply(center, weight) + bias
    y_radius = apply(radius, abs_w)
    magnitude = apply(np.abs(center), abs_w) + y_radius + np.abs(bias)
    slack = rounding(magnitude, terms)
    lo, hi = y_center - y_radius - slack, y_center + y_radius + slack
    if not x.finite:
        # An unbounded element reaches an output through every non-zero weight, in the weight's direction.
        positive, negative = (weight > 0).astype(np.float64), (weight < 0).astype(np.float64)
        up, down = np.isposinf(x.hi).astype(np.float64), np.isneginf(x.lo).astype(np.float64)
        hi = np.where(apply(up, positive) + apply(down, negative) > 0, np.inf, hi)
        lo = np.where(apply(down, positive) + apply(up, negative) > 0, -np.inf, lo)
    sym = None
    # Symbolic rows sit in front of the tensor's axes: a weight with more axes than x would meet them.
    symbolic = symbolic and weight.ndim <= len(x.shape)
    if symbolic and domain is not None and x.sym is not None and domain.fits(lo.shape):
        w_pos, w_neg = np.maximum(weight, 0.0), np.minimum(weight, 0.0)
        lower = apply(x.sym.lower, w_pos) + apply(x.sym.upper, w_neg)
        upper = apply(x.sym.upper, w_pos) + apply(x.sym.lower, w_neg)
        lower, upper = sym_broadcast(lower, lo.shape).copy(), sym_broadcast(upper, hi.shape).copy()
        lower[0] += bias - slack
        upper[0] += bias + slack
        sym = Symbolic(lower, upper)
    return make(lo, hi, sym, domain)


def multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * b


def structural(x: Bound, move: Callable[[np.ndarray, int], np.ndarray], domain: Domain | None) -> Bound:
    """An op that only moves, copies or selects elements: the same move on every bound array.

    ``move(array, lead)`` acts on an array with ``lead`` extra leading axes (1 for symbolic rows).
    """
    lo, hi = move(x.lo, 0), move(x.hi, 0)
    sym = None
    if x.sym is not None and domain is not None and domain.fits(lo.shape):
        sym = Symbolic(move(x.sym.lower, 1), move(x.sym.upper, 1))
    value = move(x.value, 0) if x.value is not None else None
    bound = make(lo, hi, sym, domain)
    bound.value = value
    return bound


def monotone(x: Bound, f: Callable[[np.ndarray], np.ndarray], increasing: bool = True, relative: float = 1e-6) -> Bound:
    """An elementwise monotone op; its float32 result may be off by ``relative`` of its size, plus one ulp."""
    with np.errstate(all="ignore"):
        a, b = f(x.lo), f(x.hi)
    lo, hi = (a, b) if increasing else (b, a)
    lo = lo - relative * np.abs(lo) - np.finfo(np.float32).tiny
    hi = hi + relative * np.abs(hi) + np.finfo(np.float32).tiny
    return make(lo, hi, None, None)


def valley(
    x: Bound,
    f: Callable[[np.ndarray], np.ndarray],
    argmin: tuple[float, float],
    minimum: float,
    relative: float = 1e-6,
) -> Bound:
    """An op decreasing up to its minimizer and increasing after it (Gelu, Mish, HardSwish, Abs).

    ``argmin`` is an interval that holds the minimizer and ``minimum`` a value at or below the minimum:
    left of the interval f(u) is the lowest value, right of it f(l), in between the minimum.
    """
    with np.errstate(all="ignore"):
        a, b = f(x.lo), f(x.hi)
    left, right = argmin
    lo = np.where(x.hi <= left, b, np.where(x.lo >= right, a, minimum))
    hi = np.maximum(a, b)
    lo = lo - relative * np.abs(lo) - 1e-7
    hi = hi + relative * np.abs(hi) + 1e-7
    return make(lo, hi, None, None)


def relu_like(x: Bound, slope: np.ndarray | float, domain: Domain | None) -> Bound:
    """max(x, 0) (slope 0) or a leaky ReLU with 0 <= slope <= 1, per element; exact in floating point.

    The linear relaxation (as in DeepPoly): where the input straddles zero the upper bound is the chord
    through (l, f(l)) and (u, u), the lower bound the line through the origin with slope 1 or ``slope``,
    whichever leaves less area.
    """
    slope = np.broadcast_to(np.asarray(slope, np.float64), np.broadcast_shapes(np.shape(slope), x.shape))
    l, u = x.lo, x.hi
    lo = np.where(l >= 0, l, safe_product(slope, l))
    hi = np.where(u >= 0, u, safe_product(slope, u))
    sym = None
    if x.sym is not None and domain is not None and np.all((slope >= 0) & (slope <= 1)) and domain.fits(lo.shape):
        with np.errstate(invalid="ignore", divide="ignore"):
            chord = np.where(u > l, (u - slope * l) / (u - l), 1.0)
        straddles = (l < 0) & (u > 0)
        chord = np.where(straddles, chord, 0.0)
        negative = u <= 0
        # Upper: identity where l >= 0; slope * x where u <= 0; the chord where it straddles.
        upper_scale = np.where(negative, slope, np.where(straddles, chord, 1.0))
        upper_shift = np.where(straddles, slope * l - chord * l, 0.0)
        # Lower: identity or slope * x outside; where it straddles, slope 1 when u > -l else ``slope``.
        lower_scale = np.where(negative, slope, np.where(straddles, np.where(u > -l, 1.0, slope), 1.0))
        sym_l, sym_u = sym_broadcast(x.sym.lower, lo.shape), sym_broadcast(x.sym.upper, hi.shape)
        # slope >= 0, so scaling keeps the direction of each bound.
        upper = sym_u * upper_scale
        upper[0] = upper[0] + upper_shift
        lower = sym_l * lower_scale
        sym = Symbolic(lower, upper)
    return make(lo, hi, sym, domain)
