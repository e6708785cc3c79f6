"""RL101: the weight scale of a ReLU layer is far from He and Xavier initialization."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from relulint.context import Context
from relulint.findings import Finding, Note, Severity
from relulint.margins import margins
from relulint.margins.weights import is_constant_weight
from relulint.rules import Option, RuleMeta

META = RuleMeta(
    id="RL101",
    name="weight-scale-off-init",
    severity=Severity.WARNING,
    summary="The weights feeding a ReLU layer have a standard deviation far below Xavier's or far above He's.",
    why="""
ReLU layers keep the scale of the signal only when each layer's weights have a standard deviation near
He's `sqrt(2 / fan_in)` (Xavier's `sqrt(2 / (fan_in + fan_out))` is the common, slightly smaller choice).
Much smaller weights shrink the signal layer after layer until the biases dominate the pre-activations:
a unit whose bias is negative then never switches on, and the gradients vanish. Much larger weights blow
the pre-activations up, so one large negative update pushes whole layers below zero for every input: the
classic way a ReLU network dies in its first steps.

The rule judges an *initialization*, so it only compares layers whose weights still look like one: an
initializer draws every weight of a layer from one zero-mean, light-tailed distribution, so all units share
one scale up to sampling noise. Trained layers drift apart unit by unit, and a BatchNorm folded into a
convolution at export multiplies each unit by its own `gamma / sigma`; such layers (the units' scales
differ more than 3x beyond sampling noise, or the weights are heavy-tailed) are not judged, and a note
says how many were passed over and why (`units[].metrics.looks_initialized`, `scale_dispersion` and
`weight_kurtosis` in the JSON). The band is also wide (by default below 0.25x Xavier or above 4x He).
Layers followed by a normalization are not judged by default: the normalization rescales the
pre-activation whatever the weight scale.
""",
    fix="""
Initialize the layer with He (Kaiming) initialization, e.g. `torch.nn.init.kaiming_normal_(w,
nonlinearity="relu")`, or Xavier; check that a custom initializer does not scale the weights by a constant
(a forgotten `* 0.01` or `* 10`); for a trained checkpoint, look for a learning rate or weight decay that
shrank or blew up the weights.
""",
    example="""
```python
layer = torch.nn.Linear(512, 512)
torch.nn.init.normal_(layer.weight, std=0.001)   # He would be sqrt(2/512) = 0.0625: 0.016x He
```
""",
    options=(
        Option("min_ratio", float, 0.25, "Fire when the std is below this multiple of Xavier's std."),
        Option("max_ratio", float, 4.0, "Fire when the std is above this multiple of He's std."),
        Option("check_normalized", bool, False, "Also judge layers whose pre-activation is normalized."),
        Option("check_trained", bool, False, "Also judge layers whose weights look trained or BatchNorm-folded."),
    ),
    tags=("initialization",),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    low, high = options["min_ratio"], options["max_ratio"]
    tolerance = margins(ctx).settings.constant_tolerance
    passed_over: list[tuple[str, str]] = []  # (layer, why its weights do not look like an initialization)
    for layer in ctx.layers:
        if layer.norm is not None and not options["check_normalized"]:
            continue
        stats = ctx.weight_stats(layer)
        # Non-finite (RL103) and constant (RL102) weights are those rules' findings, not this one's.
        if stats is None or stats.nonfinite or is_constant_weight(stats, tolerance):
            continue
        he_ratio = stats.std / stats.he_std
        xavier_ratio = stats.std / stats.xavier_std
        if not (math.isfinite(he_ratio) and math.isfinite(xavier_ratio)):
            continue
        if not (xavier_ratio < low or he_ratio > high):
            continue
        evidence = stats.init_evidence()
        if not evidence.initialized and not options["check_trained"]:
            passed_over.append((layer.name, evidence.reason))
            continue
        if xavier_ratio < low:
            direction = "small"
            effect = "the signal shrinks through the layer until the biases decide which units are on"
        elif he_ratio > high:
            direction = "large"
            effect = "pre-activations are blown up, so one large update can push whole layers below zero"
        else:
            continue
        yield Finding(
            rule=META.id,
            severity=META.severity,
            message=(
                f"weight std {stats.std:.3g} is too {direction}: {he_ratio:.3g}x He ({stats.he_std:.3g}) and "
                f"{xavier_ratio:.3g}x Xavier ({stats.xavier_std:.3g}) for fan-in {stats.fan_in}, outside "
                f"[{low:g}x Xavier, {high:g}x He]; {effect}"
            ),
            node=layer.name,
            tensor=layer.weight,
            evidence={
                "layer": layer.name,
                "linear": layer.linear,
                "std": stats.std,
                "he_std": stats.he_std,
                "xavier_std": stats.xavier_std,
                "he_ratio": he_ratio,
                "xavier_ratio": xavier_ratio,
                "fan_in": stats.fan_in,
                "fan_out": stats.fan_out,
                "direction": direction,
                "min_ratio": low,
                "max_ratio": high,
                "scale_dispersion": stats.scale_dispersion,
                "weight_kurtosis": stats.kurtosis,
                "looks_initialized": evidence.initialized,
            },
            fix=(
                f"re-initialize '{layer.linear}' with He init (std {stats.he_std:.3g}) "
                f"or Xavier (std {stats.xavier_std:.3g})"
            ),
        )
    if passed_over:
        name, why = passed_over[0]
        ctx.notes.append(
            Note(
                "info",
                f"{META.id}: {len(passed_over)} layer(s) whose weight scale is outside the He/Xavier band were not "
                f"judged as an initialization because their weights look trained or BatchNorm-folded (e.g. "
                f"'{name}': {why}); `check_trained = true` judges them too",
                node=name,
            )
        )
