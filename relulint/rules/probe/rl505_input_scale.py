"""RL505: real input data far from the scale the model's first layer expects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.probe.wording import probe_result
from relulint.rules import Option, RuleMeta

META = RuleMeta(
    id="RL505",
    name="unnormalized-input-data",
    severity=Severity.WARNING,
    summary="Real input data whose per-channel mean or spread is far from unit scale, fed to a first layer with no normalization in front.",
    why="""
Initializations and training recipes assume inputs of about unit scale: mean near 0, standard deviation near 1.
Raw pixel values (0–255), unscaled physical quantities or counts make the first layer's pre-activations hundreds
of times larger than intended; a bias or weight update then pushes whole groups of units far below zero, where
ReLU passes no gradient, and they die early in training. At inference it means the data is not preprocessed the
way the model was trained, which is a bug of its own.

With `--data`, the probe measures each input's per-channel mean and standard deviation (channels on axis 1 for
a Conv, the last axis for Gemm/MatMul). It reports an input when the data goes straight into a linear layer
(through reshapes and casts only: a model that subtracts a mean or divides by a scale itself is left alone) and
some channel's |mean| exceeds `mean_limit` or its standard deviation is above `std_high` or below `std_low`.
""",
    fix="""
Normalize the data as the model expects it, e.g. `x = (x / 255 - mean) / std` with the per-channel mean and
std of the training set, or put the normalization into the model (a Sub and a Div, or a BatchNormalization in
front of the first layer) so that callers cannot forget it.
""",
    example="""
```python
np.savez("samples.npz", input=raw_uint8_images.astype(np.float32))   # 0..255 into the first Conv: RL505
```
""",
    options=(
        Option("mean_limit", float, 3.0, "Report a channel whose |mean| exceeds this."),
        Option("std_high", float, 10.0, "Report a channel whose standard deviation exceeds this."),
        Option(
            "std_low",
            float,
            0.01,
            "Report a channel whose standard deviation is below this (but not a constant channel).",
        ),
    ),
    needs=("probe",),
    tags=("probe", "data"),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    result = probe_result(ctx)
    if result is None or result.synthetic:
        return
    for name, measure in result.data_inputs.items():
        if not measure.linear:
            continue
        mean, std = measure.mean, measure.std
        constant = std == 0
        bad = (
            (np.abs(mean) > options["mean_limit"])
            | (std > options["std_high"])
            | ((std < options["std_low"]) & ~constant)
        )
        if not bad.any():
            continue
        channels = np.flatnonzero(bad)
        worst = channels[np.argsort(-np.maximum(np.abs(mean[channels]), std[channels]), kind="stable")][:5]
        listed = ", ".join(f"channel {int(c)} (mean {mean[c]:.3g}, std {std[c]:.3g})" for c in worst)
        yield Finding(
            rule=META.id,
            severity=META.severity,
            message=(
                f"input '{name}' goes into '{measure.linear}' with no normalization in front, but {len(channels)} of its "
                f"{mean.size} channels (axis {measure.axis}) are far from unit scale in the data: {listed}"
            ),
            node=measure.linear,
            tensor=name,
            units=AffectedUnits(len(channels), int(mean.size), tuple(int(c) for c in worst)),
            evidence={
                "input": name,
                "axis": measure.axis,
                "values_per_channel": measure.count,
                "mean": mean,
                "std": std,
                "mean_limit": options["mean_limit"],
                "std_high": options["std_high"],
                "std_low": options["std_low"],
            },
            fix=f"normalize '{name}' before the model (subtract the per-channel mean, divide by the std) or add the normalization to the model",
        )
