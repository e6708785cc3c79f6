"""RL102: all weights of a ReLU layer are zero or equal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.margins import margins
from relulint.margins.weights import is_constant_weight
from relulint.rules import RuleMeta

META = RuleMeta(
    id="RL102",
    name="constant-weights",
    severity=Severity.ERROR,
    summary="Every weight feeding a ReLU layer is zero, or all share one value.",
    why="""
When all the weights of a layer are equal, every unit computes the same function of the input and receives
the same gradient: the symmetry between the units never breaks, and the layer behaves like a single unit
however wide it is. With all-zero weights it is worse: each unit outputs `relu(bias)` whatever the input,
so with a zero or negative bias it is off for every input and, since ReLU's gradient is zero there, it never
learns. This usually means an initializer did not run (weights left at `zeros`), a checkpoint failed to load
into the layer, or the export replaced the weights by a placeholder.

Weights also count as constant when their std is below `constant_tolerance` (default 1e-6) times
max(|mean|, He std). That tolerance is the margins analysis's (`[tool.relulint.margins] constant_tolerance`,
or this rule's `std_tolerance` as before), so RL101, RL104 and RL201 leave exactly the layers this rule
reports to it.
""",
    fix="""
Initialize the weights randomly (He initialization for ReLU: `torch.nn.init.kaiming_normal_`); if the model
was trained, check that its checkpoint was loaded (`load_state_dict(..., strict=True)`) before exporting.
""",
    example="""
```python
layer = torch.nn.Linear(256, 128)
torch.nn.init.zeros_(layer.weight)   # or constant_(layer.weight, 0.01)
```
""",
    tags=("initialization",),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    tolerance = margins(ctx).settings.constant_tolerance  # the one tolerance RL101, RL104 and the margins use
    for layer in ctx.layers:
        stats = ctx.weight_stats(layer)
        if stats is None or not is_constant_weight(stats, tolerance):
            continue
        zero = stats.min == stats.max == 0.0
        bias = ctx.bias(layer)
        if zero:
            what = f"all {stats.units * stats.fan_in} weights are 0"
            effect = "every unit outputs relu(bias) whatever the input and gets no gradient through its weights"
        else:
            what = f"all {stats.units * stats.fan_in} weights equal {stats.mean:.3g} (std {stats.std:.3g})"
            effect = "every unit computes the same function and gets the same update: the symmetry never breaks"
        yield Finding(
            rule=META.id,
            severity=META.severity,
            message=f"{what}: {effect}",
            node=layer.name,
            tensor=layer.weight,
            units=AffectedUnits(stats.units, stats.units, tuple(range(min(stats.units, 5)))),
            evidence={
                "layer": layer.name,
                "linear": layer.linear,
                "value": stats.mean,
                "std": stats.std,
                "all_zero": zero,
                "units": stats.units,
                "fan_in": stats.fan_in,
                "bias_max": float(bias.max()) if bias is not None and bias.size else None,
            },
            fix=f"initialize '{layer.linear}' randomly (He: std {stats.he_std:.3g}) or load the trained weights",
        )
