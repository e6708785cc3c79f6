"""RL602: units that are active for every input of the domain, so their activation is the identity."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.rules import Option, RuleMeta

META = RuleMeta(
    id="RL602",
    name="provably-always-active",
    severity=Severity.NOTE,
    summary="Units whose pre-activation is at least 0 for every input of the domain: their ReLU is the identity there.",
    why="""
The mirror image of RL601. From the same sound bounds over the input domain (`--input-range`), a unit
whose lower bound is at least 0 is active for every input: its ReLU passes the value through unchanged,
so the unit is linear over the whole domain. That is not a bug by itself (a unit may be meant to carry a
signal through), but a layer where most units are always active contributes little non-linearity, and a
layer where all are is a linear map followed by a no-op activation: the network is shallower than it
looks. It often comes with biases that grew large and positive, or with inputs that are all positive
(images in [0, 1]) feeding positive weights.

A note, per layer: it reports where the activation does no work, it does not say the model is broken.
""",
    fix="""
If a whole layer is always active, merge it with the next linear layer (two linear maps compose into one)
or check why its biases are so large. If the domain you gave is narrower than the real inputs, widen it:
the units may switch off on inputs outside it.
""",
    example="""
```python
layer = torch.nn.Linear(4, 8)          # inputs x in [0, 1]
with torch.no_grad():
    layer.weight.abs_()                # all weights >= 0, so w·x >= 0
    layer.bias.fill_(0.1)              # and w·x + b >= 0.1: relu(w·x + b) = w·x + b on the domain
```
""",
    options=(
        Option(
            "min_fraction",
            float,
            0.0,
            "Report a layer only when more than this fraction of its units is always active.",
        ),
        Option("worst", int, 5, "How many units to list (highest lower bound first)."),
    ),
    needs=("bounds",),
    tags=("proof",),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    from relulint.bounds.describe import domain_text, unit_list  # here: the bounds package is heavy to import

    result = ctx.analyses.bounds
    if result is None:
        return
    for layer in ctx.layers:
        bounds = result.layers.get(layer.name)
        if bounds is None or not bounds.always_active.size:
            continue
        active = bounds.always_active
        fraction = active.size / bounds.units
        if fraction <= options["min_fraction"]:
            continue
        order = active[np.argsort(-bounds.lower[active], kind="stable")]
        whole = active.size == bounds.units
        consequence = (
            "the whole layer is linear over the domain: its activation does nothing there"
            if whole
            else f"their {bounds.activation_op} is the identity there"
        )
        yield Finding(
            rule=META.id,
            severity=META.severity,
            message=(
                f"{active.size} of {bounds.units} units ({fraction:.1%}) are active for every input in "
                f"{domain_text(result)} ({unit_list(order, bounds.lower, '≥', options['worst'])}); {consequence}"
            ),
            node=layer.name,
            tensor=layer.pre_activation,
            units=AffectedUnits(int(active.size), bounds.units, tuple(int(i) for i in order[: options["worst"]])),
            evidence={
                "layer": layer.name,
                "linear": layer.linear,
                "domain": {name: [list(p) for p in pairs] for name, pairs in result.domain.items()},
                "always_active": int(active.size),
                "units": bounds.units,
                "fraction": fraction,
                "whole_layer": whole,
                "active": [{"unit": int(i), "lower_bound": float(bounds.lower[i])} for i in order[: options["worst"]]],
            },
            fix=(
                f"merge '{layer.linear or layer.name}' into the next linear layer"
                if whole
                else "nothing to fix if these units are meant to be linear; otherwise check their biases"
            ),
        )
