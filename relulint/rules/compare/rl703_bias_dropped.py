"""RL703: biases (or BatchNorm betas) that moved strongly negative since the older checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.rules import Option, RuleMeta

META = RuleMeta(
    id="RL703",
    name="bias-dropped-since-checkpoint",
    severity=Severity.WARNING,
    summary="Units whose bias (or BatchNorm beta) dropped by more than k standard deviations of their pre-activation since the older checkpoint.",
    why="""
How far a bias moves matters next to how widely the unit's pre-activation spreads: a drop of `Δb` shifts
the unit by `Δb / σ` standard deviations, where `σ = ‖w‖ · σ_in` (or `|γ|` after a normalization) is the
spread relulint's static margin model gives the unit at the older checkpoint. A healthy step moves it
by a few hundredths; a step that moves it by a whole standard deviation or more pushes the unit towards
never switching on, and the usual cause is a learning rate too high for the bias (biases often get the
largest relative gradients) or a loss spike. The units flagged here are the ones RL701 will report
next, if they are not dead already.
""",
    fix="""
Lower the learning rate, or the bias's rate alone (many optimizers let a parameter group have its own);
exclude biases from weight decay; clip gradients. Re-initialize the worst units' biases to zero if they
are already dead.
""",
    example="""
```bash
relulint epoch_1.onnx --compare init.onnx
# fc2_relu [RL703] warning: 40 of 64 units' biases dropped by more than 1 standard deviation ...
```
""",
    options=(
        Option("k", float, 1.0, "Fire for units whose bias dropped by more than k standard deviations (Δb/σ < -k)."),
        Option("worst", int, 5, "How many units to list."),
    ),
    needs=("compare",),
    tags=("checkpoint", "bias"),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    result = ctx.analyses.compare
    if result is None:
        return
    k = options["k"]
    for layer in ctx.layers:
        change = result.layers.get(layer.name)
        if change is None or change.bias_shift is None or not change.bias_shift.size:
            continue
        shift = change.bias_shift
        dropped = np.flatnonzero(np.nan_to_num(shift, nan=0.0) < -k)
        if not dropped.size:
            continue
        order = dropped[np.argsort(shift[dropped], kind="stable")]
        worst = [int(i) for i in order[: options["worst"]]]
        fraction = dropped.size / shift.size
        term = "beta" if layer.norm is not None else "bias"
        yield Finding(
            rule=META.id,
            severity=META.severity,
            message=(
                f"{dropped.size} of {shift.size} units ({fraction:.1%}) had their {term} drop by more than {k:g} "
                f"standard deviation{'' if k == 1 else 's'} of their pre-activation since {result.old_path} "
                f"({', '.join(f'unit {i}: {shift[i]:.3g}σ' for i in worst)})"
            ),
            node=layer.name,
            tensor=layer.bias[0].tensor if layer.bias else None,
            units=AffectedUnits(int(dropped.size), int(shift.size), tuple(worst)),
            evidence={
                "layer": layer.name,
                "linear": layer.linear,
                "old": result.old_path,
                "k": k,
                "dropped": int(dropped.size),
                "units": int(shift.size),
                "fraction": fraction,
                "shift_min": float(shift[order[0]]),
                "worst": [{"unit": i, "shift": float(shift[i])} for i in worst],
            },
            fix=f"lower the learning rate of the {'betas' if layer.norm is not None else 'biases'} of '{layer.linear or layer.name}' and clip gradients",
        )
