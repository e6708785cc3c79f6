"""RL504: the probe ran on synthetic inputs only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from relulint.context import Context
from relulint.findings import Finding, Severity
from relulint.probe.wording import probe_result
from relulint.rules import RuleMeta

META = RuleMeta(
    id="RL504",
    name="synthetic-probe-inputs",
    severity=Severity.NOTE,
    summary="The probe measured dead units on synthetic inputs only; real data gives a verdict to trust.",
    why="""
Without `--data`, the probe feeds the model random inputs: structured samples for float inputs (half smooth
noise, half pages with strokes for an image or a voiced sound for a signal; `--input-dist`; in the domain of an
input with an `--input-range`), integers below the embedding table's size for token ids, masks all ones,
random booleans. A unit that responds to a feature
real inputs have and noise lacks (an edge detector, a word) stays silent on noise and looks dead, and a unit
that is dead on real data can fire on noise. The counts on synthetic inputs are a cheap first look, not a
verdict: every probe finding made on them says so.
""",
    fix="""
Pass real inputs, a few hundred samples or more (299 bound a dead unit's firing rate under 1%):
`relulint model.onnx --data samples.npz` with one array per model input,
named after the input and with the samples on axis 0 (a `.npy` file works for a model with one input, and a
folder of such files is read in name order), or a folder of images or WAV files with `--preprocess` saying how
they become inputs (`--preprocess imagenet`). Every sample is used unless `--samples N` caps them. Preprocess
the samples exactly as the model sees them in production.
""",
    example="""
```python
import numpy as np
np.savez("samples.npz", input=images[:64].astype(np.float32))   # then: relulint model.onnx --data samples.npz
```
""",
    needs=("probe",),
    tags=("probe",),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    result = probe_result(ctx)
    if result is None or not result.synthetic:
        return
    inputs = list(result.fed_inputs)
    arrays = ", ".join(f"{name}=..." for name in inputs[:4])
    yield Finding(
        rule=META.id,
        severity=META.severity,
        message=(
            f"the probe ran on {result.describe_inputs()}, which can make healthy units look dead; for counts to "
            f"trust pass real samples with --data FILE.npz (np.savez(FILE, {arrays}), samples on axis 0)"
        ),
        evidence={
            "samples": result.samples,
            "batch": result.batch,
            "distribution": result.distribution,
            "inputs": inputs,
        },
        fix="pass real samples with --data FILE.npz (one array per input) or a .npy file for a one-input model",
    )
