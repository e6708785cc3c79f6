"""Shared wording and helpers of the probe rules (RL501-RL505)."""

from __future__ import annotations

from typing import Any

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.probe.result import LayerMeasure, ProbeResult
from relulint.units import Layer


def probe_result(ctx: Context) -> ProbeResult | None:
    result = ctx.analyses.get("probe")
    return result if isinstance(result, ProbeResult) else None


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def measured_layers(ctx: Context, result: ProbeResult) -> list[tuple[Layer, LayerMeasure]]:
    """Layers in graph order with a measurement from at least one sample."""
    pairs = []
    for layer in ctx.layers:
        measure = result.layers.get(layer.name)
        if measure is not None and measure.ran and measure.units:
            pairs.append((layer, measure))
    return pairs


def dead_units_finding(
    rule: str,
    severity: Severity,
    layer: Layer,
    measure: LayerMeasure,
    result: ProbeResult,
    options: dict[str, Any],
    threshold: float,
) -> Finding:
    worst = measure.dead_units_worst_first()[: options["worst"]]
    fraction = measure.dead / measure.units
    listed = ", ".join(f"unit {i} (max {measure.maximum[i]:.3g})" for i in worst)
    rarely = f"; {measure.rarely_active} more are rarely active (positive on under 1%)" if measure.rarely_active else ""
    return Finding(
        rule=rule,
        severity=severity,
        message=(
            f"{measure.dead} of {measure.units} units ({percent(fraction)}) never output a positive value on "
            f"{result.describe_inputs()} ({measure.positions:,} values per unit); first: {listed}{rarely}"
            f"{result.caveat()}"
        ),
        node=layer.name,
        tensor=layer.output,
        units=AffectedUnits(measure.dead, measure.units, tuple(worst)),
        evidence={
            "dead": measure.dead,
            "units": measure.units,
            "fraction": fraction,
            "threshold": threshold,
            "rarely_active": measure.rarely_active,
            "samples": measure.samples,
            "values_per_unit": measure.positions,
            "inputs": result.inputs,
            "distribution": result.distribution,
            "worst": [{"unit": i, "max": float(measure.maximum[i])} for i in worst],
        },
        fix=(
            f"find why the units of '{layer.linear or layer.name}' stopped firing: check the biases (RL201) and the "
            "learning rate, re-initialize the dead units or switch this activation to LeakyReLU"
        ),
    )
