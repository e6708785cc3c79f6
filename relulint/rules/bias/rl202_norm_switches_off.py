"""RL202: a normalization layer whose shift and scale keep units below zero."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.margins import margins
from relulint.margins.gaussian import active_rate
from relulint.margins.model import JUDGED_BY_NORM, at_risk
from relulint.margins.report import format_margin, percent, risk_severity, summarize_risk
from relulint.rules import Option, RuleMeta
from relulint.units import Layer

META = RuleMeta(
    id="RL202",
    name="normalization-switches-units-off",
    severity=Severity.ERROR,
    summary=(
        "A normalization before a ReLU whose beta/|gamma| is far below zero, or whose gamma is about 0, "
        "so its units are (almost) never positive."
    ),
    why="""
After BatchNormalization (or LayerNorm, GroupNorm, InstanceNorm with affine parameters) each channel is
`gamma · z + beta` with `z` about `N(0, 1)`. The channel is positive when `z > -beta / gamma`, so when
`beta / |gamma|` is below `-k` (default 3) the ReLU after it is active on fewer than 0.13% of inputs, and
when `gamma` is about 0 with `beta <= 0` it is never active at all. Such channels output zero and pass no
gradient to anything before them. This is the common way units die in trained BN networks: a large
learning rate or weight decay on `gamma` shrinks it, or `beta` drifts down, and the channel never recovers.

Constant scales and shifts between the normalization and the activation are included. When a residual
join sits before the activation, the shortcut's statically propagated mean and spread are added (a ReLU
output on the shortcut keeps many such units alive). A layer with a normalization is judged here and not
by RL201: its pre-activation scale is the normalization's, whatever the linear op's bias.

The finding is an error when more than `error_fraction` of the channels are affected, a warning above
`warning_fraction`, a note below; for ReLU variants that keep a gradient below zero (LeakyReLU, PReLU, ELU, GELU, hard-swish...), a note.
""",
    fix="""
Re-initialize the normalization's `gamma` to 1 and `beta` to 0 for the affected channels, or remove the
channels if they were pruned on purpose (network slimming drives `gamma` to 0 to mark them). In training,
exclude `gamma` and `beta` from weight decay and lower the learning rate.
""",
    example="""
```python
bn = torch.nn.BatchNorm2d(64)
with torch.no_grad():
    bn.bias[:32] = -2.0      # beta
    bn.weight[:32] = 0.5     # gamma: beta/|gamma| = -4, channels 0..31 are positive on 0.003% of inputs
```
""",
    options=(
        Option("k", float, 3.0, "A channel is at risk when beta/|gamma| is below -k."),
        Option(
            "scale_tolerance", float, 1e-3, "|gamma| at or below this counts as zero (never positive if beta <= 0)."
        ),
        Option("warning_fraction", float, 0.05, "Warning when more than this fraction of the channels is at risk."),
        Option("error_fraction", float, 0.4, "Error when more than this fraction of the channels is at risk."),
        Option("worst", int, 5, "How many of the worst channels the evidence lists (the message names 3)."),
    ),
    tags=("bias", "normalization"),
)


MESSAGE_UNITS = 3  # the message names a few; the evidence lists `worst` of them


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    k = options["k"]
    tolerance = options["scale_tolerance"]
    analysis = margins(ctx)
    for layer in ctx.layers:
        model = analysis.models.get(layer.name)
        if model is None or model.judged_by != JUDGED_BY_NORM or model.gamma is None or model.beta is None:
            continue
        mask = at_risk(model, k, tolerance)
        if not mask.any():
            continue
        summary = summarize_risk(model, mask, options["worst"])
        severity = risk_severity(summary.fraction, options["warning_fraction"], options["error_fraction"])
        if layer.keeps_gradient_below_zero:
            severity = Severity.NOTE
        collapsed = int(np.count_nonzero(mask & (np.abs(model.gamma) <= tolerance)))
        worst = [
            {
                "unit": i,
                "margin": float(model.margins[i]) if np.isfinite(model.margins[i]) else float("-inf"),
                "gamma": float(model.gamma[i]),
                "beta": float(model.beta[i]),
                "active_rate": active_rate(float(model.margins[i])) if np.isfinite(model.margins[i]) else 0.0,
            }
            for i in summary.worst
        ]
        listed = ", ".join(
            f"channel {w['unit']} (beta {w['beta']:.3g}, gamma {w['gamma']:.3g}, margin {format_margin(w['margin'])})"
            for w in worst[:MESSAGE_UNITS]
        )
        norm_op = layer.norm_op or "normalization"
        residual = (
            f"; the shortcut adds mean {model.shortcut_mean:.3g}, std {model.shortcut_std:.3g}"
            if model.shortcut_mean or model.shortcut_std
            else ""
        )
        yield Finding(
            rule=META.id,
            severity=severity,
            message=(
                f"{summary.count} of {summary.total} channels ({percent(summary.fraction)}) of {norm_op} "
                f"'{layer.norm}' are switched off: beta/|gamma| below -{k:g} (active on under "
                f"{percent(active_rate(-k))} of inputs)"
                + (f", {collapsed} of them with gamma about 0" if collapsed else "")
                + f"; worst: {listed}{residual}"
            ),
            node=layer.name,
            tensor=_beta_tensor(layer),
            units=AffectedUnits(summary.count, summary.total, summary.worst),
            evidence={
                "layer": layer.name,
                "norm": layer.norm,
                "norm_op": layer.norm_op,
                "k": k,
                "at_risk": summary.count,
                "units": summary.total,
                "fraction": summary.fraction,
                "gamma_about_zero": collapsed,
                "margin_min": summary.margin_min,
                "margin_median": summary.margin_median,
                "shortcut_mean": model.shortcut_mean,
                "shortcut_std": model.shortcut_std,
                "worst": worst,
                "warning_fraction": options["warning_fraction"],
                "error_fraction": options["error_fraction"],
            },
            fix=f"reset gamma to 1 and beta to 0 for the listed channels of '{layer.norm}', or remove them if pruned",
        )


def _beta_tensor(layer: Layer) -> str | None:
    return dict(layer.norm_params).get("beta")
