"""RL501: a layer in which many units never activate on the probe's inputs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from relulint.context import Context
from relulint.findings import Finding, Severity
from relulint.probe.wording import (
    EVIDENCE_POLICY,
    MAX_FIRING_RATE,
    dead_evidence,
    dead_units_finding,
    measured_layers,
    probe_result,
)
from relulint.rules import Option, RuleMeta

ERROR_FRACTION = 0.4  # the default of `error_fraction`, which the summary states

META = RuleMeta(
    id="RL501",
    name="dead-units",
    severity=Severity.ERROR,
    summary=f"A layer in which more than {ERROR_FRACTION:.0%} of the units never output a positive value on the probe's inputs.",
    why=f"""
A ReLU unit that is never positive is *dead*: its output is always zero, so it passes no gradient back and
training cannot revive it. The layer then works with fewer units than it was given, and everything downstream
sees a narrower representation. When a large part of a layer is dead the model is usually damaged: a learning
rate that was too high, a bad initialization or a bias pushed far below zero.

relulint runs the model with onnxruntime on batches of inputs (see `--samples`) and counts, for every unit (a
channel of a Conv, a feature of a Gemm/MatMul), the values that were positive over all samples and all
positions. A unit is dead when that count is zero. Static rules such as RL201 say a unit is *at risk*; this
rule says how many units *are* dead on actual inputs.

By default the inputs are synthetic (see `--input-dist`); a model trained on images or tokens can leave healthy
units silent on noise, so findings made on synthetic inputs are suspicions. Pass real samples with `--data`
for a verdict you can trust (RL504).
{EVIDENCE_POLICY}
For the ReLU variants (LeakyRelu, PRelu, Elu, HardSwish, ...) a unit that is never positive still passes a
gradient through its negative side, so it is not dead and this rule does not count it (the probe's JSON
lists it as `never_positive`); only units whose output is exactly 0 on every value (HardSwish below -3,
say) are dead there.
""",
    fix="""
Retrain with a lower learning rate (or warm it up), check the biases of the layer (RL201) and its input
normalization, re-initialize the dead units, or use LeakyReLU so that units below zero still learn. If the
model was fine before a change, compare the two checkpoints with `--compare`.
""",
    example="""
```python
layer = torch.nn.Linear(64, 128)
torch.nn.init.constant_(layer.bias, -10.0)   # every unit is negative on every input
model = torch.nn.Sequential(layer, torch.nn.ReLU())
```
""",
    options=(
        Option(
            "error_fraction",
            float,
            ERROR_FRACTION,
            "Report a layer when more than this fraction of its units are dead.",
        ),
        Option("worst", int, 5, "How many dead units to list."),
        MAX_FIRING_RATE,
    ),
    needs=("probe",),
    tags=("probe", "dead"),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    result = probe_result(ctx)
    if result is None:
        return
    threshold = options["error_fraction"]
    for layer, measure in measured_layers(ctx, result):
        if measure.dead / measure.units > threshold:
            evidence = dead_evidence(ctx, layer, measure, result, options["max_firing_rate"])
            yield dead_units_finding(META.id, META.severity, layer, measure, result, options, threshold, evidence)
