"""Shared wording and helpers of the probe rules (RL501-RL505), and the evidence behind a dead count.

Severity follows evidence. A dead-unit finding is at its rule's full severity only when the units it
counts are proven dead (RL601's bounds, when the proofs ran) or were never positive on enough real
samples that the 95% upper bound on their firing rate is below the rule's ``max_firing_rate``. Otherwise
(synthetic inputs, or too few real samples) it is a suspicion, one severity lower, and says what to pass
to confirm it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.probe.result import (
    CONFIDENCE,
    DATA,
    PROVEN,
    LayerMeasure,
    ProbeResult,
    firing_rate_bound,
    rate_text,
    samples_for_bound,
)
from relulint.rules import Option
from relulint.units import Layer

MAX_FIRING_RATE = Option(
    "max_firing_rate",
    float,
    0.01,
    "Full severity only for units proven dead, or never positive on enough real samples that the 95% "
    "upper bound on their firing rate is below this (0.01 takes 299 samples); else one level lower.",
)

EVIDENCE_POLICY = f"""
**How sure is it?** A unit never positive on N independent samples may still fire on inputs that were not
tried; all the probe can say is that its firing rate is, with 95% confidence, under `1 - 0.05**(1/N)`
(exact binomial; 32 samples: under 8.9%, 299: under 1%, 1,797: under 0.17%). Samples count, not positions:
the positions of one sample are not independent. Each finding carries its evidence: `proven` (the units are
dead for every input of the `--input-range` domain, by RL601's bounds), `data` (real samples from `--data`)
or `synthetic` (generated inputs), with `samples` and `firing_rate_bound`.

The finding is at the rule's full severity only when the evidence supports it: the units are proven dead, or
they were never positive on real data with enough samples that the bound is below `max_firing_rate` (default
1%: {samples_for_bound(0.01):,} samples). On synthetic inputs alone, or too few real samples, it is one level
lower and says it is a suspicion and what to pass to confirm it (`--data`, more `--samples`).
"""


def probe_result(ctx: Context) -> ProbeResult | None:
    return ctx.analyses.probe


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


def downgraded(severity: Severity) -> Severity:
    """One level lower, for a finding the evidence only suggests."""
    return Severity(max(Severity.NOTE, severity - 1))


@dataclass(frozen=True)
class DeadEvidence:
    """What a layer's dead count rests on."""

    inputs: str  # DATA or SYNTHETIC: how the probe's samples were made
    samples: int  # samples that reached the layer
    rate_bound: float  # 95% upper bound on the firing rate of a unit never positive on them
    max_rate: float  # the rule's max_firing_rate
    dead: tuple[int, ...]  # the units the probe found dead
    proven: tuple[int, ...]  # of those, the ones the bounds prove dead on the whole input domain

    @property
    def enough_data(self) -> bool:
        return self.inputs == DATA and self.rate_bound <= self.max_rate

    @property
    def confirmed(self) -> int:
        """Dead units whose evidence supports full severity."""
        return len(self.dead) if self.enough_data else len(self.proven)

    @property
    def kind(self) -> str:
        """PROVEN when the proofs cover every dead unit, else how the samples were made."""
        return PROVEN if self.dead and len(self.proven) == len(self.dead) else self.inputs

    def sentence(self, result: ProbeResult) -> str:
        """Why to believe the count, and how much: appended to a finding's first clause."""
        rate = rate_text(self.rate_bound)
        proven = ""
        if self.proven:
            proven = f"; {len(self.proven)} of them proven dead for every input of the --input-range domain (RL601)"
        if self.enough_data:
            return f": each fires on under {rate} of inputs (95% confidence){proven}"
        if self.inputs == DATA:
            needed = samples_for_bound(self.max_rate)
            return (
                f", a suspicion: each fires on under {rate} of inputs (95% confidence), and calling it dead takes "
                f"under {rate_text(self.max_rate)}: pass at least {needed:,} samples with --data (and --samples)"
                f"{proven}"
            )
        return f", a suspicion: each fires on under {rate} of such inputs (95% confidence){proven}{result.caveat()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "evidence": self.kind,
            "inputs": self.inputs,
            "samples": self.samples,
            "confidence": CONFIDENCE,
            "firing_rate_bound": self.rate_bound,
            "max_firing_rate": self.max_rate,
            "proven_dead": len(self.proven),
            "proven_units": list(self.proven[:20]),
            "confirmed_dead": self.confirmed,
        }


def dead_evidence(
    ctx: Context, layer: Layer, measure: LayerMeasure, result: ProbeResult, max_rate: float
) -> DeadEvidence:
    """The evidence for ``layer``'s dead units: the probe's samples, and RL601's bounds when they ran."""
    dead = np.flatnonzero(measure.dead_mask)
    proven = np.array([], dtype=np.int64)
    bounds = ctx.analyses.bounds
    layer_bounds = bounds.layers.get(layer.name) if bounds is not None else None
    # A variant's unit below zero still passes a gradient: only zero-output activations are proven dead.
    if layer_bounds is not None and measure.zero_below and layer_bounds.zero_output:
        proven = np.intersect1d(dead, np.asarray(layer_bounds.dead, dtype=np.int64))
    return DeadEvidence(
        inputs=result.inputs,
        samples=measure.samples,
        rate_bound=firing_rate_bound(measure.samples),
        max_rate=max_rate,
        dead=tuple(int(i) for i in dead),
        proven=tuple(int(i) for i in proven),
    )


def dead_units_finding(
    rule: str,
    severity: Severity,
    layer: Layer,
    measure: LayerMeasure,
    result: ProbeResult,
    options: dict[str, Any],
    threshold: float,
    evidence: DeadEvidence,
) -> Finding:
    """A layer's dead units, at ``severity`` when the evidence confirms more than ``threshold`` of them."""
    if evidence.confirmed / measure.units <= threshold:
        severity = downgraded(severity)
    worst = measure.dead_units_worst_first()[: options["worst"]]
    fraction = measure.dead / measure.units
    listed = ", ".join(f"unit {i} (max {measure.maximum[i]:.3g})" for i in worst)
    rarely = f"; {measure.rarely_active} more are rarely active (positive on under 1%)" if measure.rarely_active else ""
    behaviour = (
        "never output a positive value"
        if measure.zero_below
        else f"output exactly 0 on every value (the flat part of {layer.activation_op}, no gradient)"
    )
    switch = " or switch this activation to LeakyReLU" if measure.zero_below and layer.family == "plain" else ""
    return Finding(
        rule=rule,
        severity=severity,
        message=(
            f"{measure.dead} of {measure.units} units ({percent(fraction)}) {behaviour} on "
            f"{result.describe_inputs(measure.samples)}{evidence.sentence(result)}; first: {listed}{rarely}"
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
            "never_positive": measure.never_positive,
            "values_per_unit": measure.positions,
            **evidence.to_json(),
            "distribution": result.distribution,
            "worst": [{"unit": i, "max": float(measure.maximum[i])} for i in worst],
        },
        fix=(
            f"find why the units of '{layer.linear or layer.name}' stopped firing: check the biases (RL201) and the "
            f"learning rate, re-initialize the dead units{switch}"
        ),
    )
