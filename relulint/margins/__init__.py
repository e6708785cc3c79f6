"""Static bias margins: how far below zero each unit's pre-activation sits, from the weights alone.

Every ReLU-family unit is modelled by a Gaussian pre-activation ``N(mean_j, std_j^2)``:

- a layer with no normalization between its linear op and the activation (judged by RL201):
  ``mean_j = bias_j`` and ``std_j = ||w_j||_2 * sigma_in``, where ``sigma_in`` is the root mean square of the
  linear op's input, propagated statically through the graph (see ``propagate_scales``);
- a layer with a normalization (judged by RL202): the normalized value is ``N(0, 1)`` per channel, so
  ``mean_j = beta_j`` and ``std_j = |gamma_j|`` (times any constant scale and plus any constant shift
  between the normalization and the activation).

When a residual join sits before the activation, the shortcut's propagated mean is added to ``mean_j`` and
its variance to ``std_j^2`` (the shortcut is assumed independent of the main branch).

The unit's *margin* is ``mean_j / std_j``: the number of standard deviations its bias puts it below (or
above) zero. A unit whose margin is below ``-k`` is positive on fewer than ``Phi(-k)`` of Gaussian inputs
(0.13% at k = 3): it is at risk of never switching on.

Approximations, on purpose: the margin follows the documented definition ``b / (||w|| * sigma_in)``
with ``sigma_in`` the RMS of the input, so it leaves out the mean term ``mu_in * sum(w_j)``; the
propagation of scales from layer to layer keeps it (see ``_unit_model``). Input coordinates are treated as
independent; average and max pooling keep the RMS of their input (an overestimate after averaging, which
makes margins smaller in magnitude, so the rules err towards silence). Where a scale cannot be propagated,
``sigma_in`` falls back to 1.0 and ``input_scale_source`` says why.

The analysis's own options (``relulint.analysis_options``, ``[tool.relulint.margins]``): ``input_scale``
(``sigma_in`` at a graph input), ``constant_tolerance`` (constant weights: RL102's, not propagated through),
``k`` and ``scale_tolerance`` (what its ``at_risk`` metrics and the checkpoint comparison count). RL201 and
RL202 judge the unit models with their own ``k``.

The package's parts: ``model`` (the data), ``gaussian`` (the arithmetic), ``propagation`` (the forward
pass), ``weights`` (predicates the init rules share) and ``report`` (wording RL201/RL202 share).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from relulint.margins.model import Margins, Settings, UnitModel, at_risk
from relulint.margins.propagation import Propagation

if TYPE_CHECKING:
    from relulint.context import Context
    from relulint.units import Layer


def margins(ctx: Context) -> Margins:
    """The model's unit models and propagated scales, computed once per run."""
    return ctx.cached("margins", compute_margins)


def compute_margins(ctx: Context) -> Margins:
    result = Margins(settings=Settings.from_context(ctx))
    Propagation(ctx, result).run()
    for layer in ctx.layers:
        model = result.models.get(layer.name)
        if model is not None:
            _record_metrics(ctx, layer, model, result.settings)
    return result


def _record_metrics(ctx: Context, layer: Layer, model: UnitModel, settings: Settings) -> None:
    count = int(np.count_nonzero(at_risk(model, *settings.risk(model))))
    finite = model.margins[np.isfinite(model.margins)]
    ctx.metric(
        layer,
        input_scale=model.input_scale,
        bias_margin_min=float(finite.min()) if finite.size else float("nan"),
        at_risk=count,
        at_risk_fraction=count / model.units if model.units else 0.0,
    )
