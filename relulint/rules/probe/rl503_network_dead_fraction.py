"""RL503: the share of dead units in the whole network."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.probe.wording import measured_layers, percent, probe_result
from relulint.rules import Option, RuleMeta

META = RuleMeta(
    id="RL503",
    name="network-dead-fraction",
    severity=Severity.NOTE,
    summary="How many of the network's ReLU-family units are dead on the probe's inputs, in all layers together.",
    why="""
Per-layer rules (RL501, RL502) point at the worst layers; this one sums up. A network in which a fifth of all
units never activate carries that much dead weight in every layer, even when no single layer crosses the
per-layer thresholds, and its effective width is smaller than its architecture says.

It is a note whenever any probed unit is dead, and a warning when the dead fraction of all probed units
exceeds `warning_fraction` (default 20%). The evidence lists the layers with the most dead units.
""",
    fix="""
Start with the layers listed in the evidence (and any RL501/RL502 findings). Network-wide death usually has one
cause: a learning rate that was too high, an initialization that did not match the activation (RL101), or
inputs that are not normalized (RL505).
""",
    options=(
        Option("warning_fraction", float, 0.2, "A warning instead of a note above this fraction of dead units."),
        Option("layers", int, 5, "How many of the layers with most dead units to list."),
    ),
    needs=("probe",),
    tags=("probe", "dead"),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    result = probe_result(ctx)
    if result is None:
        return
    measured = measured_layers(ctx, result)
    dead = sum(measure.dead for _, measure in measured)
    units = sum(measure.units for _, measure in measured)
    if not dead or not units:
        return
    fraction = dead / units
    severity = Severity.WARNING if fraction > options["warning_fraction"] else Severity.NOTE
    ranked = sorted(measured, key=lambda pair: (-pair[1].dead, pair[0].name))[: options["layers"]]
    worst = [{"layer": layer.name, "dead": m.dead, "units": m.units} for layer, m in ranked if m.dead]
    listed = ", ".join(f"{w['layer']} ({w['dead']}/{w['units']})" for w in worst)
    yield Finding(
        rule=META.id,
        severity=severity,
        message=(
            f"{dead} of {units} units ({percent(fraction)}) in {len(measured)} probed layers never output a positive "
            f"value on {result.describe_inputs()}; most in: {listed}{result.caveat()}"
        ),
        units=AffectedUnits(dead, units),
        evidence={
            "dead": dead,
            "units": units,
            "fraction": fraction,
            "layers": len(measured),
            "worst_layers": worst,
            "warning_fraction": options["warning_fraction"],
            "inputs": result.inputs,
        },
        fix="fix the layers listed first; the cause is usually shared (learning rate, initialization, input scale)",
    )
