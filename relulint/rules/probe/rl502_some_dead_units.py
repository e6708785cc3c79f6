"""RL502: a layer with a smaller, still notable share of dead units."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from relulint.context import Context
from relulint.findings import Finding, Severity
from relulint.probe.wording import MAX_FIRING_RATE, dead_evidence, dead_units_finding, measured_layers, probe_result
from relulint.rules import Option, RuleMeta

WARNING_FRACTION = 0.1  # the default of `warning_fraction`, which the summary states

META = RuleMeta(
    id="RL502",
    name="some-dead-units",
    severity=Severity.WARNING,
    summary=f"A layer in which more than {WARNING_FRACTION:.0%} of the units never output a positive value on the probe's inputs.",
    why="""
Dead units (never positive on any sample, so they pass no gradient and cannot recover) are wasted capacity.
A few in a wide layer are normal after training; a tenth of a layer or more usually means training pushed
units out of their working range, and the share tends to grow with further training at the same settings.

This is the milder companion of RL501: it reports layers whose dead fraction is above `warning_fraction`
(default 10%); a layer that RL501 reports too (above its `error_fraction`) is reported by RL501 alone, so
that it is not reported twice. How the probe counts, why synthetic inputs can exaggerate, and how the evidence sets the severity
(a warning when confirmed, else a note saying it is a suspicion) is explained under RL501; ReLU variants are
judged as there.
""",
    fix="""
Watch the layer while training (the dead fraction should not grow), lower the learning rate, check the biases
(RL201) and the normalization before the activation, or use LeakyReLU.
""",
    example="""
```python
layer = torch.nn.Linear(64, 128)
layer.bias.data[:20] = -10.0   # 20 of 128 units (16%) never activate
```
""",
    options=(
        Option(
            "warning_fraction",
            float,
            WARNING_FRACTION,
            "Report a layer when more than this fraction of its units are dead.",
        ),
        Option("worst", int, 5, "How many dead units to list."),
        MAX_FIRING_RATE,
    ),
    needs=("probe",),
    tags=("probe", "dead"),
    yields_to=("RL501",),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    result = probe_result(ctx)
    if result is None:
        return
    threshold = options["warning_fraction"]
    for layer, measure in measured_layers(ctx, result):
        if measure.dead / measure.units > threshold:  # a layer RL501 reports too is left to it (yields_to)
            evidence = dead_evidence(ctx, layer, measure, result, options["max_firing_rate"])
            yield dead_units_finding(META.id, META.severity, layer, measure, result, options, threshold, evidence)
