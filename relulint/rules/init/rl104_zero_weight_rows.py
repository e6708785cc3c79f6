"""RL104: units whose weight row is entirely zero."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.margins import margins
from relulint.margins.report import percent
from relulint.margins.weights import is_constant_weight
from relulint.rules import Option, RuleMeta

META = RuleMeta(
    id="RL104",
    name="zero-weight-rows",
    severity=Severity.ERROR,
    summary="Units of a ReLU layer whose whole weight row is zero: they ignore their input.",
    why="""
A unit whose weights are all zero computes `relu(bias)` whatever the input. With a bias of zero or below it
outputs 0 for every input, and because ReLU's gradient at and below zero is 0, no gradient ever reaches its
weights: the unit is dead by construction and can never come back. Rows of zeros come from magnitude
pruning that removed whole units without removing them from the graph, from masks applied to the weights,
or from a partial checkpoint load.

Units with a positive bias (and no normalization after the linear op) are not counted: they output a
constant but still pass a gradient to their weights, so training can revive them. The finding is an error
when more than `error_fraction` of the layer is affected, a warning otherwise.
""",
    fix="""
If the units were pruned on purpose, remove them from the layer (and the matching inputs of the next layer)
so the model is smaller and the finding goes away; otherwise re-initialize the rows (He init) or load the
missing weights.
""",
    example="""
```python
layer = torch.nn.Linear(256, 128)
with torch.no_grad():
    layer.weight[:64] = 0      # units 0..63 ignore their input
    layer.bias[:64] = 0        # and output relu(0) = 0 for every input
```
""",
    options=(Option("error_fraction", float, 0.4, "Error when more than this fraction of the units is affected."),),
    tags=("initialization",),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    tolerance = margins(ctx).settings.constant_tolerance
    for layer in ctx.layers:
        stats = ctx.weight_stats(layer)
        # Non-finite entries are zeroed in the statistics (RL103's business); a whole zero layer is RL102's.
        if stats is None or stats.nonfinite or not stats.zero_rows.size or is_constant_weight(stats, tolerance):
            continue
        rows = stats.zero_rows
        bias = ctx.bias(layer)
        revivable = np.zeros(0, dtype=np.int64)
        if layer.norm is None and bias is not None and bias.size == stats.units:
            revivable = rows[bias[rows] > 0]
            rows = rows[bias[rows] <= 0]
        if not rows.size:
            continue
        fraction = rows.size / stats.units
        severity = Severity.ERROR if fraction > options["error_fraction"] else Severity.WARNING
        yield Finding(
            rule=META.id,
            severity=severity,
            message=(
                f"{rows.size} of {stats.units} units ({percent(fraction)}) have an all-zero weight row "
                f"(first: {', '.join(str(int(i)) for i in rows[:5])}); they ignore their input and never switch on"
            ),
            node=layer.name,
            tensor=layer.weight,
            units=AffectedUnits(int(rows.size), stats.units, tuple(int(i) for i in rows[:5])),
            evidence={
                "layer": layer.name,
                "linear": layer.linear,
                "zero_rows": int(rows.size),
                "units": stats.units,
                "fraction": fraction,
                "zero_rows_with_positive_bias": int(revivable.size),
                "error_fraction": options["error_fraction"],
            },
            fix=f"remove the pruned units from '{layer.linear}' or re-initialize their weight rows",
        )
