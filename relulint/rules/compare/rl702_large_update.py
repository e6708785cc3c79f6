"""RL702: a layer's weights moved by a large fraction of their own size between two checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from statistics import median
from typing import Any

from relulint.context import Context
from relulint.findings import Finding, Severity
from relulint.rules import Option, RuleMeta

META = RuleMeta(
    id="RL702",
    name="large-weight-update",
    severity=Severity.WARNING,
    summary="A layer's relative weight update ‖W_new − W_old‖ / ‖W_old‖ since the older checkpoint is far above the other layers' or above a bound.",
    why="""
Between two nearby checkpoints of a healthy run, each layer's weights move by a small fraction of their
norm: a few percent per epoch with a well-tuned learning rate. A relative update `‖W_new − W_old‖ / ‖W_old‖`
near or above 1 means the weights were largely replaced rather than refined: the signature of a learning
rate that is too high (or of a loss spike, a bad batch, a missing gradient clip). Steps that large throw
ReLU units' pre-activations far to one side; the ones thrown below zero die and stay dead (RL701).

The rule fires for a layer whose relative update is above `max_update`, or more than `outlier_factor`
times the median of the other layers' (and above `min_update`, so that tiny updates are never outliers).
Compare checkpoints one epoch or a few hundred steps apart: over a whole training run, large total
updates are normal.
""",
    fix="""
Lower the learning rate (by the factor the update is too large, as a start), add a warm-up, clip the
gradient norm, or use per-layer adaptive rates; if only one layer is an outlier, check its initialization
and whether its gradient is much larger than the others' (a missing normalization, a large fan-in).
""",
    example="""
```bash
relulint epoch_1.onnx --compare init.onnx
# fc2_relu [RL702] warning: weights moved by 278% of their norm since init.onnx (above 1) ...
```
""",
    options=(
        Option("max_update", float, 1.0, "Fire when a layer's relative update is above this."),
        Option(
            "outlier_factor", float, 10.0, "Fire when a layer's update is this many times the other layers' median."
        ),
        Option("min_update", float, 0.1, "Updates at or below this are never outliers."),
    ),
    needs=("compare",),
    tags=("checkpoint",),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    result = ctx.analyses.compare
    if result is None:
        return
    updates = {name: c.relative_update for name, c in result.layers.items() if c.relative_update is not None}
    for layer in ctx.layers:
        update = updates.get(layer.name)
        if update is None:
            continue
        others = [value for name, value in updates.items() if name != layer.name]
        typical = median(others) if others else None
        reasons = []
        if update > options["max_update"]:
            reasons.append(f"above {options['max_update']:g}")
        if typical and update > options["min_update"] and update > options["outlier_factor"] * typical:
            reasons.append(f"{update / typical:.3g}x the other layers' median {typical:.3g}")
        if not reasons:
            continue
        change = result.layers[layer.name]
        yield Finding(
            rule=META.id,
            severity=META.severity,
            message=(
                f"weights moved by {update:.0%} of their norm since {result.old_path} "
                f"(‖ΔW‖/‖W_old‖ = {update:.3g}, {' and '.join(reasons)}): the signature of a learning rate that is too high"
            ),
            node=layer.name,
            tensor=layer.weight,
            evidence={
                "layer": layer.name,
                "linear": layer.linear,
                "old": result.old_path,
                "relative_update": update,
                "weight_norm_old": change.weight_norm_old,
                "weight_norm_new": change.weight_norm_new,
                "other_layers_median": typical,
                "max_update": options["max_update"],
                "outlier_factor": options["outlier_factor"],
            },
            fix=f"lower the learning rate (this step was about {max(update / options['max_update'], 1):.3g}x too large) or clip gradients",
        )
