"""Moments of rectified Gaussians and the Gaussian tail: the arithmetic of the margin model."""

from __future__ import annotations

import math

import numpy as np

# Chebyshev fit of erfc (Numerical Recipes' erfcc): relative error below 1.2e-7 everywhere, tails included,
# so the moments of far-off units stay accurate; numpy has no erfc and a Python loop costs a microsecond a unit.
_ERFC_COEFFICIENTS = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def erfc(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    # Horner's scheme in place (a margin layer has a few units: the calls, not the arithmetic, cost)
    poly = np.full_like(z, _ERFC_COEFFICIENTS[-1])
    for coefficient in reversed(_ERFC_COEFFICIENTS[:-1]):
        poly *= t
        poly += coefficient
    with np.errstate(under="ignore", over="ignore"):
        tail = t * np.exp(-z * z + poly)
    return np.where(x >= 0, tail, 2.0 - tail)


def normal_pdf(t: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * np.square(t)) / math.sqrt(2.0 * math.pi)


def rectified_moments(mean: np.ndarray, std: np.ndarray, slope: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """E[f(X)] and E[f(X)^2] for X ~ N(mean, std^2) and f(x) = max(x, 0) + slope * min(x, 0)."""
    with np.errstate(over="ignore", invalid="ignore"):  # huge weights overflow to inf: a scale, not a crash
        return _rectified_moments(np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64), slope)


def _rectified_moments(m: np.ndarray, s: np.ndarray, slope: float) -> tuple[np.ndarray, np.ndarray]:
    positive_s = s > 0
    safe_s = np.where(positive_s, s, 1.0)
    t = m / safe_s
    # One erfc for both sides: the small tail is exact, its complement is 1 - tail.
    tail = 0.5 * erfc(np.abs(t) / math.sqrt(2.0))
    cdf = np.where(t < 0, tail, 1.0 - tail)  # Phi(t)
    pdf = normal_pdf(t)
    square = m * m + safe_s * safe_s
    first = m * cdf + safe_s * pdf
    second = np.maximum(square * cdf + m * safe_s * pdf, 0.0)
    if slope:
        cdf_neg = np.where(t < 0, 1.0 - tail, tail)  # Phi(-t)
        first = first - slope * (-m * cdf_neg + safe_s * pdf)  # E[max(-X, 0)]
        second = second + slope * slope * np.maximum(square * cdf_neg - m * safe_s * pdf, 0.0)
    # A unit with no spread outputs f(mean) exactly.
    exact = np.where(m > 0, m, slope * m)
    return np.where(positive_s, first, exact), np.where(positive_s, second, exact * exact)


def active_rate(margin: float) -> float:
    """Fraction of Gaussian inputs on which a unit with this margin is positive: Phi(margin)."""
    if math.isnan(margin):
        return float("nan")
    return 0.5 * math.erfc(-margin / math.sqrt(2.0))
