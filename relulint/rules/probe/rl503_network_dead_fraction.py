"""RL503: the share of dead units in the whole network."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.probe.result import rate_text
from relulint.probe.wording import MAX_FIRING_RATE, dead_evidence, measured_layers, percent, probe_result
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
exceeds `warning_fraction` (default 20%) on evidence that supports it: units proven dead, or never positive
on enough real samples (`max_firing_rate`, as explained under RL501). On synthetic inputs or too few samples
it stays a note and says it is a suspicion. The evidence lists the layers with the most dead units.
""",
    fix="""
Start with the layers listed in the evidence (and any RL501/RL502 findings). Network-wide death usually has one
cause: a learning rate that was too high, an initialization that did not match the activation (RL101), or
inputs that are not normalized (RL505).
""",
    options=(
        Option("warning_fraction", float, 0.2, "A warning instead of a note above this fraction of dead units."),
        Option("layers", int, 5, "How many of the layers with most dead units to list."),
        MAX_FIRING_RATE,
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
    evidence = [dead_evidence(ctx, layer, m, result, options["max_firing_rate"]) for layer, m in measured]
    confirmed = sum(e.confirmed for e in evidence)
    severity = Severity.WARNING if confirmed / units > options["warning_fraction"] else Severity.NOTE
    samples = max(e.samples for e in evidence)
    bound = max(e.rate_bound for e in evidence if e.samples == samples)
    if confirmed == dead:
        how = f"; each fires on under {rate_text(bound)} of inputs (95% confidence)"
    else:
        confirmed_text = f" ({confirmed} confirmed by proofs or enough real samples)" if confirmed else ""
        how = f"; a suspicion{confirmed_text}{result.caveat()}"
    ranked = sorted(measured, key=lambda pair: (-pair[1].dead, pair[0].name))[: options["layers"]]
    worst = [{"layer": layer.name, "dead": m.dead, "units": m.units} for layer, m in ranked if m.dead]
    listed = ", ".join(f"{w['layer']} ({w['dead']}/{w['units']})" for w in worst)
    yield Finding(
        rule=META.id,
        severity=severity,
        message=(
            f"{dead} of {units} units ({percent(fraction)}) in {len(measured)} probed layers never output a positive "
            f"value on {result.describe_inputs(samples)}; most in: {listed}{how}"
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
            "evidence": "proven" if evidence and all(e.kind == "proven" for e in evidence if e.dead) else result.inputs,
            "samples": samples,
            "firing_rate_bound": bound,
            "max_firing_rate": options["max_firing_rate"],
            "confirmed_dead": confirmed,
        },
        fix="fix the layers listed first; the cause is usually shared (learning rate, initialization, input scale)",
    )
