"""RL601: units that are dead for every input of the given domain, proven by bound propagation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.rules import Option, RuleMeta

META = RuleMeta(
    id="RL601",
    name="provably-dead-units",
    severity=Severity.ERROR,
    summary="Units whose pre-activation is at most 0 for every input of the domain: dead for every possible input, not just the sampled ones.",
    why="""
The probe (RL5xx) measures dead units on sampled inputs; a unit it never saw fire may still fire on an
input it did not try. This rule proves it cannot. Given the domain of the model's inputs
(`--input-range x=0,1`, or per channel `x=lo,hi/lo,hi/...`), relulint propagates sound lower and upper
bounds through the graph: interval arithmetic through convolutions, matrix products, normalizations,
pooling, reshapes and the activations, intersected, where the input is small enough, with linear bounds
in the input elements, which are exact through chains of linear layers. A unit whose upper bound is at
most 0 outputs 0 for **every** input of the domain: it contributes nothing, and since ReLU's gradient is
0 there, training can never revive it. A clipped ReLU (ReLU6) whose lower bound is at or above its
ceiling is stuck at a constant too.

The bounds are sound for float32 execution: each summing op is widened by the worst-case float32 rounding
error. They are not always tight, so units the rule does not list may still be dead; the ones it lists
are dead. Ops relulint does not model give unbounded outputs (a note lists them), which keeps the proof
sound. For LeakyReLU, PReLU, ELU and other variants, a unit always below zero still passes a gradient, so
the finding is a note.
""",
    fix="""
Remove the dead units (and the matching inputs of the next layer), or re-initialize their weights and
biases (He init, zero bias) and train again with a lower learning rate. If the domain you gave is wider
than the data the model sees, the units are dead on real data as well; if it is narrower, widen it to
the inputs the model must handle.
""",
    example="""
```python
layer = torch.nn.Linear(4, 8)                 # inputs x in [0, 1]
with torch.no_grad():
    layer.weight[0] = -layer.weight[0].abs()  # unit 0: w·x <= 0 for x >= 0
    layer.bias[0] = -0.1                      # so w·x + b <= -0.1 < 0 on the whole domain
```
`relulint model.onnx --input-range x=0,1` reports unit 0 as dead with its upper bound, -0.1.
""",
    options=(Option("worst", int, 5, "How many units to list (lowest upper bound first)."),),
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
        if bounds is None or not (bounds.dead.size or bounds.saturated.size):
            continue
        stuck = np.union1d(bounds.dead, bounds.saturated)
        fraction = stuck.size / bounds.units
        parts = []
        if bounds.dead.size:
            effect = (
                "outputs 0 and passes no gradient"
                if bounds.zero_output
                else f"stays on the negative side of its {bounds.activation_op}"
            )
            parts.append(
                f"{_count(bounds.dead.size, stuck.size)}the pre-activation never exceeds {bounds.threshold:g} "
                f"(upper bounds: {unit_list(bounds.dead, bounds.upper, '≤', options['worst'])}), so each {effect}"
            )
        if bounds.saturated.size:
            order = bounds.saturated[np.argsort(-bounds.lower[bounds.saturated], kind="stable")]
            parts.append(
                f"{_count(bounds.saturated.size, stuck.size)}the pre-activation never drops below the ceiling "
                f"{bounds.ceiling:g} (lower bounds: {unit_list(order, bounds.lower, '≥', options['worst'])}), "
                "so each outputs a constant"
            )
        severity = META.severity if bounds.zero_output or bounds.saturated.size else Severity.NOTE
        yield Finding(
            rule=META.id,
            severity=severity,
            message=(
                f"{stuck.size} of {bounds.units} units ({fraction:.1%}) are dead for every input in "
                f"{domain_text(result)}: {'; '.join(parts)}"
            ),
            node=layer.name,
            tensor=layer.pre_activation,
            units=AffectedUnits(int(stuck.size), bounds.units, tuple(int(i) for i in bounds.dead[: options["worst"]])),
            evidence={
                "layer": layer.name,
                "linear": layer.linear,
                "domain": {name: [list(p) for p in pairs] for name, pairs in result.domain.items()},
                "method": "interval+symbolic" if bounds.symbolic else "interval",
                "proven_dead": int(bounds.dead.size),
                "saturated": int(bounds.saturated.size),
                "units": bounds.units,
                "fraction": fraction,
                "threshold": bounds.threshold,
                "ceiling": bounds.ceiling,
                "dead": [
                    {"unit": int(i), "upper_bound": float(bounds.upper[i])} for i in bounds.dead[: options["worst"]]
                ],
                "stuck_at_ceiling": [
                    {"unit": int(i), "lower_bound": float(bounds.lower[i])}
                    for i in bounds.saturated[: options["worst"]]
                ],
            },
            fix=(
                f"remove or re-initialize units {', '.join(str(int(i)) for i in stuck[:10])}"
                f"{' …' if stuck.size > 10 else ''} of '{layer.linear or layer.name}'"
            ),
        )


def _count(part: int, whole: int) -> str:
    """'3 of them: ' when the finding mixes dead and saturated units, else nothing."""
    return "" if part == whole else f"for {part} of them "
