"""Weight predicates the margins analysis and the init rules share, so that one cause gives one finding."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from relulint.stats import WeightStats
from relulint.units import Layer, norm_parameters

if TYPE_CHECKING:
    from relulint.context import Context


def is_constant_weight(stats: WeightStats, tolerance: float) -> bool:
    """All weights equal (zero included), or a std negligible next to their size and He's std."""
    if stats.nonfinite or not math.isfinite(stats.std):
        return False
    reference = max(abs(stats.mean), stats.he_std if math.isfinite(stats.he_std) else 0.0)
    return stats.min == stats.max or stats.std <= tolerance * reference


def layer_has_nonfinite(ctx: Context, layer: Layer) -> bool:
    stats = ctx.weight_stats(layer)
    if stats is not None and stats.nonfinite:
        return True
    bias = ctx.bias(layer)
    if bias is not None and not np.isfinite(bias).all():  # the method: np.all's Python layers cost more here
        return True
    return any(not np.isfinite(v).all() for v in norm_parameters(ctx.graph, layer).values() if v is not None)
