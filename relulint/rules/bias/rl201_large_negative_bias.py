"""RL201: units whose bias sits several standard deviations below zero."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.margins import margins
from relulint.margins.gaussian import active_rate
from relulint.margins.model import JUDGED_BY_BIAS, at_risk
from relulint.margins.report import format_margin, percent, risk_severity, summarize_risk, upstream_hint
from relulint.rules import Option, RuleMeta

META = RuleMeta(
    id="RL201",
    name="large-negative-bias",
    severity=Severity.ERROR,
    summary="Units whose bias is so negative, next to the spread of their input, that they are almost never active.",
    why="""
A ReLU unit is active when `w·x + b > 0`. If its input `x` has a root-mean-square scale `σ_in`, then
`w·x` spreads about `‖w‖₂ · σ_in` around zero, and the unit's *margin* `b / (‖w‖₂ · σ_in)` says how many
of those standard deviations the bias moves it. Below `-k` (default 3) the unit is positive on fewer than 0.13% of
inputs: it outputs zero and passes no gradient almost all the time, so training cannot pull it back. These
biases come from an initializer or a bias constant set too low, from a training run that drove the biases
down (a learning rate too high is the usual cause), or from a conversion that mixed up a sign.

relulint finds `σ_in` statically, as a root mean square: 1.0 at a graph input (the margins analysis's
`input_scale`: `[tool.relulint.margins] input_scale`, or this rule's `input_scale` as before), the normalized scale `sqrt(mean(γ² + β²))` after a normalization layer, and through earlier
linear+ReLU layers. There each unit is modelled as a Gaussian `N(m, s²)` with `m = b_j + μ_in·Σw_j` and
`s = ‖w_j‖·sd_in` (`μ_in`, `sd_in`: the mean and spread of that layer's own input), whose rectified output
has the mean square `(m²+s²)·Φ(m/s) + m·s·φ(m/s)`; `σ_in` is the root of its average over the units.
This is an approximation: input coordinates are treated as independent, pooling, flatten and reshape
keep the RMS of their input, and residual joins add variances. On He-initialized MLPs it matches the RMS
onnxruntime measures within a few percent; on trained models, whose weights are correlated with their
inputs, it tends to underestimate. Where no estimate can be propagated (an op relulint does not model),
`σ_in` falls back to 1.0 and the finding's evidence says so (`input_scale_source`, `input_scale_fallback`). Units after a normalization are judged by RL202 instead (their scale is the
normalization's); units with an all-zero weight row are RL104's.

The finding is an error when more than `error_fraction` of the layer is at risk, a warning above
`warning_fraction`, a note below. ReLU variants that pass a gradient below zero (LeakyReLU, PReLU, ELU,
GELU, hard-swish...) keep learning there, so for them the finding is at most a note. Where no scale could be
propagated to the layer and `σ_in` is the fallback 1.0, the margin rests on an assumption, not an estimate:
the finding is then at most a warning and says so.
""",
    fix="""
Initialize biases to zero (or a small positive constant such as 0.01 for ReLU layers); if the model was
trained, lower the learning rate or warm it up, and check that no regularizer pushes biases down. Adding a
normalization layer before the activation, or switching to LeakyReLU, also stops units from dying this way.
""",
    example="""
```python
layer = torch.nn.Linear(64, 128)           # He init: w·x has std about 1.4 for unit-scale inputs
torch.nn.init.constant_(layer.bias, -4.0)  # margin -4 / 1.4 = -2.8; the next layers' inputs vanish
```
""",
    options=(
        Option("k", float, 3.0, "A unit is at risk when its margin b / (‖w‖·σ_in) is below -k."),
        Option("warning_fraction", float, 0.05, "Warning when more than this fraction of a layer is at risk."),
        Option("error_fraction", float, 0.4, "Error when more than this fraction of a layer is at risk."),
        Option("worst", int, 5, "How many of the worst units the evidence lists (the message names 3)."),
    ),
    tags=("bias",),
)


MESSAGE_UNITS = 3  # the message names a few; the evidence lists `worst` of them


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    k = options["k"]
    analysis = margins(ctx)
    for layer in ctx.layers:
        model = analysis.models.get(layer.name)
        if model is None or model.judged_by != JUDGED_BY_BIAS:
            continue
        mask = at_risk(model, k)
        if not mask.any():
            continue
        summary = summarize_risk(model, mask, options["worst"])
        severity = risk_severity(summary.fraction, options["warning_fraction"], options["error_fraction"])
        if layer.keeps_gradient_below_zero:
            severity = Severity.NOTE
        elif model.input_scale_fallback and severity > Severity.WARNING:
            severity = Severity.WARNING  # the margin rests on an assumed scale, not on an estimate
        rows = model.std / model.input_scale if model.input_scale else model.std
        worst = [
            {
                "unit": i,
                "margin": float(model.margins[i]),
                "bias": float(model.mean[i] - model.shortcut_mean),
                "weight_norm": float(rows[i]),
                "active_rate": active_rate(float(model.margins[i])),
            }
            for i in summary.worst
        ]
        listed = ", ".join(
            f"unit {w['unit']} (margin {format_margin(w['margin'])}, bias {w['bias']:.3g})"
            for w in worst[:MESSAGE_UNITS]
        )
        scale = f"σ_in {model.input_scale:.3g} ({model.input_scale_source})"
        yield Finding(
            rule=META.id,
            severity=severity,
            message=(
                f"{summary.count} of {summary.total} units ({percent(summary.fraction)}) have a bias margin "
                f"b/(‖w‖·σ_in) below -{k:g}, so they are active on under {percent(active_rate(-k))} of inputs; "
                f"worst: {listed}; {scale}{upstream_hint(ctx, model, options['warning_fraction'])}"
            ),
            node=layer.name,
            tensor=layer.bias[0].tensor if layer.bias else None,
            units=AffectedUnits(summary.count, summary.total, summary.worst),
            evidence={
                "layer": layer.name,
                "linear": layer.linear,
                "k": k,
                "at_risk": summary.count,
                "units": summary.total,
                "fraction": summary.fraction,
                "margin_min": summary.margin_min,
                "margin_median": summary.margin_median,
                "input_scale": model.input_scale,
                "input_scale_source": model.input_scale_source,
                "input_scale_fallback": model.input_scale_fallback,
                "shortcut_mean": model.shortcut_mean,
                "shortcut_std": model.shortcut_std,
                "worst": worst,
                "warning_fraction": options["warning_fraction"],
                "error_fraction": options["error_fraction"],
            },
            fix=(
                f"initialize the biases of '{layer.linear}' to 0 (lowest now {float(np.min(model.mean)):.3g}) "
                "or lower the learning rate"
            ),
        )
