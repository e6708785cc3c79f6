"""Reporting helpers RL201 and RL202 share: a summary of the units at risk, their wording and severity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from relulint.findings import Severity
from relulint.margins import margins
from relulint.margins.model import UnitModel, at_risk

if TYPE_CHECKING:
    from relulint.context import Context


@dataclass(frozen=True)
class RiskSummary:
    count: int
    total: int
    worst: tuple[int, ...]  # unit indices, lowest margin first
    margin_min: float
    margin_median: float

    @property
    def fraction(self) -> float:
        return self.count / self.total if self.total else 0.0


def summarize_risk(model: UnitModel, mask: np.ndarray, worst: int) -> RiskSummary:
    indices = np.flatnonzero(mask)
    order = indices[np.argsort(model.margins[indices], kind="stable")]  # -inf (gamma = 0) first
    finite = model.margins[np.isfinite(model.margins)]
    return RiskSummary(
        count=int(indices.size),
        total=model.units,
        worst=tuple(int(i) for i in order[:worst]),
        margin_min=float(np.min(model.margins[indices])) if indices.size else float("nan"),
        margin_median=float(np.median(finite)) if finite.size else float("nan"),
    )


def percent(fraction: float) -> str:
    value = 100.0 * fraction
    return f"{value:.0f}%" if value >= 10 or value == 0 else f"{value:.2g}%"


def risk_severity(fraction: float, warning_fraction: float, error_fraction: float) -> Severity:
    if fraction > error_fraction:
        return Severity.ERROR
    if fraction > warning_fraction:
        return Severity.WARNING
    return Severity.NOTE


def upstream_hint(ctx: Context, model: UnitModel, warning_fraction: float) -> str:
    """When sigma_in came from a layer that is itself mostly at risk (over the calling rule's warning
    fraction), say so: fixing it comes first."""
    analysis = margins(ctx)
    upstream = analysis.models.get(model.upstream or "")
    if upstream is None:
        return ""
    fraction = float(np.count_nonzero(at_risk(upstream, *analysis.settings.risk(upstream)))) / max(upstream.units, 1)
    if fraction <= warning_fraction:
        return ""
    return (
        f"; its input comes from '{upstream.layer}', where {percent(fraction)} of units are at risk, "
        "which shrinks σ_in: fix that layer first"
    )


def format_margin(value: float) -> str:
    if math.isinf(value):
        return "-inf" if value < 0 else "inf"
    return f"{value:.3g}"
