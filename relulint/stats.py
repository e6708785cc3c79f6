"""Weight and bias statistics of one layer, computed in one pass over its weight matrix."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WeightStats:
    units: int
    fan_in: int
    fan_out: int
    mean: float
    std: float
    min: float
    max: float
    nonfinite: int  # NaN and ±Inf entries (excluded from the other statistics)
    row_norms: np.ndarray  # [units] L2 norm of each unit's weight row (finite entries)
    row_sums: np.ndarray  # [units] sum of each unit's weight row (finite entries): its response to a mean input
    zero_rows: np.ndarray  # indices of units whose weight row is all zeros

    @property
    def he_std(self) -> float:
        return math.sqrt(2.0 / self.fan_in) if self.fan_in else float("nan")

    @property
    def xavier_std(self) -> float:
        total = self.fan_in + self.fan_out
        return math.sqrt(2.0 / total) if total else float("nan")

    @property
    def he_ratio(self) -> float:
        return self.std / self.he_std if self.he_std else float("nan")

    def to_json(self) -> dict[str, float | int]:
        return {
            "weight_mean": self.mean,
            "weight_std": self.std,
            "weight_min": self.min,
            "weight_max": self.max,
            "he_std": self.he_std,
            "xavier_std": self.xavier_std,
            "he_ratio": self.he_ratio,
            "nonfinite_weights": self.nonfinite,
            "zero_rows": int(self.zero_rows.size),
        }


# Above this magnitude squares overflow float64: such weights are scaled down for the sums.
HUGE_WEIGHT = 1e150


def weight_stats(matrix: np.ndarray, fan_in: int, fan_out: int) -> WeightStats:
    """Statistics of a ``[units, fan_in]`` weight matrix."""
    w = np.asarray(matrix)
    if w.ndim != 2:
        w = w.reshape(w.shape[0] if w.ndim else 1, -1)
    # float64 accumulators: float32 sums over millions of weights lose digits.
    with np.errstate(over="ignore", invalid="ignore"):
        row_sums = np.sum(w, axis=1, dtype=np.float64)
    finite_mask = None
    nonfinite = 0
    if not np.isfinite(row_sums.sum()):  # a finite total means every weight is finite: skip the mask pass
        finite_mask = np.isfinite(w)
        nonfinite = int(w.size - np.count_nonzero(finite_mask))
        if nonfinite:
            w = np.where(finite_mask, w, 0.0)
    count = w.size - nonfinite
    if count == 0:
        nan = float("nan")
        empty = np.zeros(w.shape[0])
        return WeightStats(w.shape[0], fan_in, fan_out, nan, nan, nan, nan, nonfinite, empty, empty, np.arange(0))
    finite_values = w[finite_mask] if nonfinite else w
    low, high = float(np.min(finite_values)), float(np.max(finite_values))
    scale = max(abs(low), abs(high))
    if scale > HUGE_WEIGHT:  # hostile or broken weights: keep the statistics finite and warning-free
        w = w.astype(np.float64) / scale
    else:
        scale = 1.0
    if finite_mask is not None or scale != 1.0:  # the weights changed: sum them again
        row_sums = np.sum(w, axis=1, dtype=np.float64)
    mean = float(row_sums.sum()) / count
    squares = np.einsum("ij,ij->i", w, w, dtype=np.float64)
    variance = max(float(np.sum(squares)) / count - mean * mean, 0.0)
    row_norms = np.sqrt(squares)
    with np.errstate(over="ignore"):  # a norm past float64's range is reported as inf
        scaled_norms = row_norms * scale
        scaled_sums = row_sums * scale
    return WeightStats(
        units=w.shape[0],
        fan_in=fan_in,
        fan_out=fan_out,
        mean=mean * scale,
        std=math.sqrt(variance) * scale,
        min=low,
        max=high,
        nonfinite=nonfinite,
        row_norms=scaled_norms,
        row_sums=scaled_sums,
        zero_rows=np.flatnonzero(row_norms == 0.0),
    )
