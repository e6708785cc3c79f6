"""The margins analysis' data: a tensor's scale estimate, a layer's unit model, the settings and the result."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from relulint.analysis_options import MARGINS
from relulint.margins.gaussian import SCALAR_UNITS

if TYPE_CHECKING:
    from relulint.context import Context

JUDGED_BY_BIAS = "bias"
JUDGED_BY_NORM = "norm"
FALLBACK_SCALE = 1.0
TINY_SCALE = 1e-12  # floor of sigma_in: an input that is (about) always zero leaves only the bias
MAX_WALK = 64


@dataclass(frozen=True)
class Scale:
    """A tensor's statically estimated mean and root mean square, or why there is none."""

    mean: float | None
    rms: float | None
    source: str
    layer: str | None = None  # the nearest upstream ReLU layer the estimate went through

    @property
    def known(self) -> bool:
        return self.rms is not None and self.mean is not None and math.isfinite(self.rms) and math.isfinite(self.mean)

    def moments(self) -> tuple[float, float] | None:
        """(mean, rms) when the estimate is known (both finite), else None."""
        if self.rms is None or self.mean is None or not (math.isfinite(self.rms) and math.isfinite(self.mean)):
            return None
        return self.mean, self.rms

    @property
    def variance(self) -> float:
        return max((self.rms or 0.0) ** 2 - (self.mean or 0.0) ** 2, 0.0)


def unknown(reason: str) -> Scale:
    return Scale(None, None, reason)


@dataclass(frozen=True)
class UnitModel:
    """The Gaussian model of one layer's pre-activations, one entry per unit."""

    layer: str
    judged_by: str  # "bias" (RL201) or "norm" (RL202)
    mean: np.ndarray
    std: np.ndarray
    margins: np.ndarray  # mean / std; NaN where std is 0 and the unit is a weight rule's business
    input_scale: float  # sigma_in of the linear op's input (NaN when the layer has no linear op)
    input_scale_source: str
    input_scale_fallback: bool
    upstream: str | None = None  # the ReLU layer sigma_in was propagated from
    shortcut_mean: float = 0.0
    shortcut_std: float = 0.0
    gamma: np.ndarray | None = None  # effective normalization scale per unit (norm layers)
    beta: np.ndarray | None = None

    @property
    def units(self) -> int:
        return int(self.mean.size)


@dataclass(frozen=True)
class Margins:
    settings: Settings
    models: dict[str, UnitModel] = field(default_factory=dict)  # layer name -> unit model
    skipped: dict[str, str] = field(default_factory=dict)  # layer name -> why it has no unit model
    # Layers skipped because a weight rule (RL102, RL103) reports their weights: not propagated downstream.
    weight_defects: set[str] = field(default_factory=set)
    scales: dict[str, Scale] = field(default_factory=dict)  # tensor id -> estimate


@dataclass(frozen=True)
class Settings:
    """The analysis's own options (declared in ``relulint.analysis_options``, set in ``[tool.relulint.margins]``),
    read once per model. The rules judge its margins with their own thresholds."""

    input_scale: float  # sigma_in at a graph input
    constant_tolerance: float  # weights this close to constant are RL102's, and not propagated through
    k: float  # the at_risk metrics and the comparison count units whose margin is below -k
    scale_tolerance: float  # ... and normalized units with |gamma| at most this and beta <= 0

    @classmethod
    def from_context(cls, ctx: Context) -> Settings:
        options = ctx.config.options_of_analysis(MARGINS)
        return cls(
            input_scale=float(options["input_scale"]),
            constant_tolerance=float(options["constant_tolerance"]),
            k=float(options["k"]),
            scale_tolerance=float(options["scale_tolerance"]),
        )

    def risk(self, model: UnitModel) -> tuple[float, float]:
        """(k, scale tolerance) for counting this unit model's units at risk."""
        return self.k, self.scale_tolerance if model.judged_by == JUDGED_BY_NORM else 0.0


def at_risk(model: UnitModel, k: float, scale_tolerance: float = 0.0) -> np.ndarray:
    """Units whose margin is below -k (NaN margins are not); for normalized units also those scaled to
    (almost) zero with a non-positive shift, which are never (or only negligibly) positive."""
    mask = model.margins < -k
    if model.judged_by == JUDGED_BY_NORM:
        mask |= (model.std <= scale_tolerance) & (model.mean <= 0)
    return mask


def margins_of(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    if mean.ndim == 1 and mean.shape == std.shape and mean.size <= SCALAR_UNITS:  # Python floats: see gaussian
        return np.array([m / s if s > 0 else math.nan for m, s in zip(mean.tolist(), std.tolist())], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, mean / np.where(std > 0, std, 1.0), np.nan)
