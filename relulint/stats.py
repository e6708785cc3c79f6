"""Weight and bias statistics of one layer, computed in one pass over its weight matrix."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    # How much the units' weight scales differ, against what i.i.d. draws of one distribution give (~1):
    # the variance of the rows' mean squares over the variance sampling alone explains. NaN: too few units.
    scale_dispersion: float = float("nan")
    kurtosis: float = float("nan")  # of the weights, each row standardized by its own RMS (normal 3, uniform 1.8)
    nonfinite_kinds: dict[str, int] = field(default_factory=dict)  # "nan", "inf", "-inf" -> entries
    nonfinite_units: np.ndarray = field(default_factory=lambda: np.arange(0))  # units with a non-finite weight

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

    def init_evidence(self) -> InitEvidence:
        """Whether these weights look like a fresh He/Xavier-style initialization, and why (not)."""
        return init_evidence(self.units, self.fan_in, self.scale_dispersion, self.kurtosis)

    def to_json(self) -> dict[str, float | int | bool]:
        evidence = self.init_evidence()
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
            "scale_dispersion": self.scale_dispersion,
            "weight_kurtosis": self.kurtosis,
            "looks_initialized": evidence.initialized,
        }


# An initializer draws every weight of a layer from one zero-mean distribution (normal, uniform, truncated
# normal), so the units' mean squares differ only by sampling noise: scale_dispersion ~ 1, its standard error
# sqrt(2 / (units - 1)). Training moves units apart, and a BatchNorm folded into the weights multiplies each
# unit by its own gamma / sigma. Measured: scikit-learn MLPs (64 and 32 ReLU units) on the digits data give
# 0.8-1.6 after 1-5 epochs and 2.6-4.5 after 50-300; a 3x3 depthwise-like [64, 9] normal weight 1.2, the same
# with per-unit factors drawn from [0.2, 3] (a fold) 6.8. Below MIN_UNITS_FOR_DISPERSION units it is too noisy.
MAX_INIT_DISPERSION = 3.0
MIN_UNITS_FOR_DISPERSION = 8
# Initializers have light tails (normal 3, uniform 1.8, truncated normal 2-3); trained weights grow heavy ones.
MAX_INIT_KURTOSIS = 6.0


@dataclass(frozen=True)
class InitEvidence:
    initialized: bool  # True also when the evidence cannot tell (few units): judged as an initialization
    reason: str  # why not, or why it could not tell; "" when the weights look initialized


def init_evidence(units: int, fan_in: int, dispersion: float, kurtosis: float) -> InitEvidence:
    if math.isfinite(dispersion) and units >= MIN_UNITS_FOR_DISPERSION and dispersion > MAX_INIT_DISPERSION:
        return InitEvidence(
            False,
            f"the units' weight scales differ {dispersion:.3g}x more than draws from one initializer do "
            "(trained, or a BatchNorm folded into them)",
        )
    if math.isfinite(kurtosis) and fan_in >= MIN_UNITS_FOR_DISPERSION and kurtosis > MAX_INIT_KURTOSIS:
        return InitEvidence(
            False, f"the weights are heavy-tailed (kurtosis {kurtosis:.3g}; an initializer's is 1.8-3): trained"
        )
    if units < MIN_UNITS_FOR_DISPERSION:
        return InitEvidence(True, f"{units} units are too few to tell trained weights from an initialization")
    return InitEvidence(True, "")


def _dispersion_and_kurtosis(squares: np.ndarray, fourths: np.ndarray, fan_in: int) -> tuple[float, float]:
    """``squares``/``fourths``: per row, the sums of w**2 and w**4 (float64)."""
    live = squares > 0
    if fan_in < 2 or np.count_nonzero(live) < 2:
        return float("nan"), float("nan")
    squares, fourths = squares[live], fourths[live]
    sampled = np.isfinite(fourths)
    row_kurtosis = fan_in * fourths[sampled] / (squares[sampled] ** 2)  # E[w^4] / E[w^2]^2 of each row
    kurtosis = float(np.mean(row_kurtosis)) if row_kurtosis.size else float("nan")
    mean_squares = squares / fan_in
    # Var of a row's mean square under i.i.d. draws: E[w^2]^2 (kurtosis - 1) / fan_in.
    expected = float(np.mean(mean_squares)) ** 2 * max(kurtosis - 1.0, 1e-12) / fan_in
    observed = float(np.var(mean_squares, ddof=1))
    return (observed / expected if expected > 0 else float("nan")), kurtosis


KURTOSIS_SAMPLE = 1 << 18  # weights whose fourth powers estimate the kurtosis


# Above this magnitude squares overflow float64: such weights are scaled down for the sums.
HUGE_WEIGHT = 1e150


def weight_stats(matrix: np.ndarray, fan_in: int, fan_out: int) -> WeightStats:
    """Statistics of a ``[units, fan_in]`` weight matrix."""
    w = np.asarray(matrix)
    if w.ndim != 2:
        w = w.reshape(w.shape[0] if w.ndim else 1, -1)
    return streamed_weight_stats([w], True, w.shape[0], w.shape[1], fan_in, fan_out)


def streamed_weight_stats(
    blocks: Iterable[np.ndarray], units_on_rows: bool, units: int, per_unit: int, fan_in: int, fan_out: int
) -> WeightStats:
    """Statistics of a weight given as consecutive blocks of rows of a 2-D matrix whose rows are the units
    (``units_on_rows``) or whose columns are, each unit having ``per_unit`` weights: one pass, and no more
    memory than one block, whatever the weight's size."""
    sums = _UnitSums(units, per_unit, units_on_rows)
    for block in blocks:
        sums.add(block)
    return sums.stats(fan_in, fan_out)


# Small weights are computed many at a time (``batched_weight_stats``): on a layer of 16 x 16 weights numpy's
# per-call overhead is nearly all of the cost, some twenty calls per layer.
BATCH_MAX_ELEMENTS = 1 << 16  # a weight up to this size joins a batch (at most KURTOSIS_SAMPLE: every unit sampled)
BATCH_BYTES = 16 * 1024**2  # weights held for batching before they are computed


def batched_weight_stats(
    stack: np.ndarray, units_on_rows: bool, fan_ins: Sequence[int], fan_outs: Sequence[int]
) -> list[WeightStats]:
    """``streamed_weight_stats`` of each matrix of ``stack`` (``[layers, rows, columns]``, at most
    BATCH_MAX_ELEMENTS per matrix) as one block, the same numbers, in a few numpy calls for the whole stack.
    A matrix with non-finite, huge or all-zero-row weights (rare) is computed on its own."""
    axis = 2 if units_on_rows else 1
    units = stack.shape[1] if units_on_rows else stack.shape[2]
    per_unit = stack.shape[2] if units_on_rows else stack.shape[1]
    product = "lij,lij->li" if units_on_rows else "lij,lij->lj"
    with np.errstate(all="ignore"):  # overflows and NaN land in the layers computed on their own below
        sums = np.asarray(np.sum(stack, axis=axis, dtype=np.float64))  # [layers, units]
        totals = sums.sum(axis=1)
        lows, highs = stack.min(axis=(1, 2)), stack.max(axis=(1, 2))
        squares = np.einsum(product, stack, stack, dtype=np.float64)
        doubled = np.square(stack, dtype=np.float64)
        fourths = np.einsum(product, doubled, doubled)
        row_norms = np.sqrt(squares)
        finite = units * per_unit
        means = totals / finite
        variances = np.maximum(squares.sum(axis=1) / finite - means * means, 0.0)
        dispersions, kurtoses, answered = _batched_dispersion_and_kurtosis(squares, fourths, per_unit)
        largest = np.maximum(np.abs(lows), np.abs(highs)).astype(np.float64)
    # The batch covers what the streamed sums do in their simplest case: all finite, no rescaling, every row live.
    simple = answered & np.isfinite(totals) & (largest <= HUGE_WEIGHT)
    results = []
    for index, (fan_in, fan_out) in enumerate(zip(fan_ins, fan_outs)):
        if not simple[index]:
            results.append(streamed_weight_stats([stack[index]], units_on_rows, units, per_unit, fan_in, fan_out))
            continue
        norms = row_norms[index]
        results.append(
            WeightStats(
                units=units,
                fan_in=fan_in,
                fan_out=fan_out,
                nonfinite=0,
                nonfinite_kinds={"nan": 0, "inf": 0, "-inf": 0},
                nonfinite_units=np.arange(0),
                mean=float(means[index]),
                std=math.sqrt(float(variances[index])),
                min=float(lows[index]),
                max=float(highs[index]),
                row_norms=norms,
                row_sums=sums[index],
                zero_rows=np.flatnonzero(norms == 0.0),
                scale_dispersion=float(dispersions[index]),
                kurtosis=float(kurtoses[index]),
            )
        )
    return results


def _batched_dispersion_and_kurtosis(
    squares: np.ndarray, fourths: np.ndarray, fan_in: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_dispersion_and_kurtosis`` of each row of ``squares``/``fourths`` (``[layers, units]``), and which rows
    it answers: not a layer with a zero row or an overflowed fourth power (the single computation leaves those
    out of its sums)."""
    layers, units = squares.shape
    nan = np.full(layers, np.nan)
    if fan_in < 2 or units < 2:
        return nan, nan, np.ones(layers, dtype=bool)
    with np.errstate(all="ignore"):
        row_kurtosis = fan_in * fourths / (squares**2)
        kurtosis = np.mean(row_kurtosis, axis=1)
        mean_squares = squares / fan_in
        expected = np.mean(mean_squares, axis=1) ** 2 * np.maximum(kurtosis - 1.0, 1e-12) / fan_in
        observed = np.var(mean_squares, axis=1, ddof=1)
        dispersion = np.where(expected > 0, observed / np.where(expected > 0, expected, 1.0), np.nan)
    answered = np.all(squares > 0, axis=1) & np.all(np.isfinite(fourths), axis=1)
    return dispersion, kurtosis, answered


class _UnitSums:
    """Per-unit running sums of a weight (w, w**2, and w**4 for a sample of units), its extremes and its
    non-finite entries, in units of ``scale``: a block with weights over HUGE_WEIGHT raises the scale and the
    sums so far are rescaled, so squares never overflow."""

    def __init__(self, units: int, per_unit: int, units_on_rows: bool) -> None:
        self.units, self.per_unit, self.units_on_rows = units, per_unit, units_on_rows
        self.sums = np.zeros(units)
        self.squares = np.zeros(units)
        total = units * per_unit
        # The fourth powers only feed the kurtosis, which a sample of evenly spaced units estimates well;
        # computing them for every unit doubled the time of the statistics on a 4096x4096 layer.
        self.step = max(1, (total // KURTOSIS_SAMPLE) + 1) if total > KURTOSIS_SAMPLE else 1
        self.fourths = np.full(units, np.nan)
        self.fourths[:: self.step] = 0.0
        self.low, self.high, self.scale = math.inf, -math.inf, 1.0
        self.finite = 0
        self.kinds = {"nan": 0, "inf": 0, "-inf": 0}
        self.nonfinite_units = np.zeros(units, dtype=bool)
        self.row = 0  # first row of the next block

    def add(self, block: np.ndarray) -> None:
        first, self.row = self.row, self.row + block.shape[0]
        if not block.size:
            return
        # Unit u's sums: over row u of the block (rows are units) or down column u (columns are).
        target = slice(first, self.row) if self.units_on_rows else slice(None)
        axis = 1 if self.units_on_rows else 0
        with np.errstate(over="ignore", invalid="ignore"):
            block_sums = np.sum(block, axis=axis, dtype=np.float64)
        finite_mask = None
        if not np.isfinite(block_sums.sum()):  # a finite total means every weight is finite: skip the mask pass
            finite_mask = np.isfinite(block)
            if finite_mask.all():
                finite_mask = None
            else:
                self._count_nonfinite(block, finite_mask, target, axis)
                block = np.where(finite_mask, block, 0.0)
        finite_values = block[finite_mask] if finite_mask is not None else block
        self.finite += finite_values.size
        if not finite_values.size:
            return
        low, high = float(np.min(finite_values)), float(np.max(finite_values))
        self.low, self.high = min(self.low, low), max(self.high, high)
        largest = max(abs(low), abs(high))
        if largest > HUGE_WEIGHT and largest > self.scale:  # hostile or broken weights: keep the sums finite
            ratio = self.scale / largest
            self.sums *= ratio
            self.squares *= ratio * ratio
            self.fourths *= ratio**4
            self.scale = largest
        if self.scale != 1.0:
            block = block.astype(np.float64) / self.scale
        if finite_mask is not None or self.scale != 1.0:  # the weights changed: sum them again
            block_sums = np.sum(block, axis=axis, dtype=np.float64)
        self.sums[target] += block_sums
        self.squares[target] += np.einsum(
            "ij,ij->i" if self.units_on_rows else "ij,ij->j", block, block, dtype=np.float64
        )
        self._add_fourths(block, first)

    def _add_fourths(self, block: np.ndarray, first: int) -> None:
        if self.units_on_rows:
            skip = -first % self.step  # the block's first row that is a sampled unit
            sample = np.square(block[skip :: self.step], dtype=np.float64)
            self.fourths[first + skip : self.row : self.step] += np.einsum("ij,ij->i", sample, sample)
        else:
            sample = np.square(block[:, :: self.step], dtype=np.float64)
            self.fourths[:: self.step] += np.einsum("ij,ij->j", sample, sample)

    def _count_nonfinite(self, block: np.ndarray, finite_mask: np.ndarray, target: slice, axis: int) -> None:
        self.kinds["nan"] += int(np.count_nonzero(np.isnan(block)))
        self.kinds["inf"] += int(np.count_nonzero(np.isposinf(block)))
        self.kinds["-inf"] += int(np.count_nonzero(np.isneginf(block)))
        self.nonfinite_units[target] |= ~np.all(finite_mask, axis=axis)

    def stats(self, fan_in: int, fan_out: int) -> WeightStats:
        nonfinite = sum(self.kinds.values())
        common: dict[str, Any] = {"units": self.units, "fan_in": fan_in, "fan_out": fan_out, "nonfinite": nonfinite}
        common |= {"nonfinite_kinds": dict(self.kinds), "nonfinite_units": np.flatnonzero(self.nonfinite_units)}
        if self.finite == 0:
            nan, empty = float("nan"), np.zeros(self.units)
            return WeightStats(
                **common, mean=nan, std=nan, min=nan, max=nan, row_norms=empty, row_sums=empty, zero_rows=np.arange(0)
            )
        mean = float(self.sums.sum()) / self.finite
        variance = max(float(np.sum(self.squares)) / self.finite - mean * mean, 0.0)
        row_norms = np.sqrt(self.squares)
        dispersion, kurtosis = _dispersion_and_kurtosis(self.squares, self.fourths, self.per_unit)
        with np.errstate(over="ignore"):  # a norm past float64's range is reported as inf
            scaled_norms = row_norms * self.scale
            scaled_sums = self.sums * self.scale
        return WeightStats(
            **common,
            mean=mean * self.scale,
            std=math.sqrt(variance) * self.scale,
            min=self.low,
            max=self.high,
            row_norms=scaled_norms,
            row_sums=scaled_sums,
            zero_rows=np.flatnonzero(row_norms == 0.0),
            scale_dispersion=dispersion,
            kurtosis=kurtosis,
        )
