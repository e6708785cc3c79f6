"""RL103: NaN or infinite weights, biases or normalization parameters in a ReLU layer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.rules import RuleMeta
from relulint.units import Layer

META = RuleMeta(
    id="RL103",
    name="non-finite-weights",
    severity=Severity.ERROR,
    summary="A ReLU layer's weights, bias or normalization parameters contain NaN or infinity.",
    why="""
One NaN in a weight row makes that unit's pre-activation NaN for every input, and a NaN propagates through
every later layer it reaches; an infinite weight does the same as soon as it meets a zero (`inf * 0`). The
model's outputs are then meaningless, and in training the gradients become NaN too. Non-finite parameters
usually come from a training run that diverged (a learning rate too high, a log or division of zero, fp16
overflow) and was saved anyway, or from a broken conversion.
""",
    fix="""
Go back to the last checkpoint whose parameters are finite (check with `torch.isfinite(p).all()` for every
parameter), then find the cause of the divergence: lower the learning rate, clip gradients, use loss
scaling for fp16, guard `log`/division against zero. For a conversion, compare the exported weights with
the source model's.
""",
    example="""
```python
import numpy as np, onnx
from onnx import numpy_helper
# a Gemm weight with one NaN entry: unit 3 outputs NaN for every input
w = numpy_helper.to_array(model.graph.initializer[0]).copy(); w[3, 0] = np.nan
```
""",
    tags=("initialization",),
)


def _per_unit_mask(values: np.ndarray | None, units: int) -> np.ndarray:
    if values is None:
        return np.zeros(units, dtype=bool)
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == units:
        return ~np.isfinite(flat)
    return np.full(units, not np.all(np.isfinite(flat)))


def _counts(values: np.ndarray) -> dict[str, int]:
    return {
        "nan": int(np.count_nonzero(np.isnan(values))),
        "inf": int(np.count_nonzero(np.isposinf(values))),
        "-inf": int(np.count_nonzero(np.isneginf(values))),
    }


def _finding(ctx: Context, layer: Layer) -> Finding | None:
    stats = ctx.weight_stats(layer)
    weight_rows = None
    if stats is not None and stats.nonfinite:  # the statistics counted them in their one pass over the weight
        weight_rows = np.zeros(stats.units, dtype=bool)
        weight_rows[stats.nonfinite_units] = True
    bias = ctx.bias(layer)
    params = {name: value for name, value in ctx.norm_parameters(layer).items() if value is not None}
    bad_params = {name: value for name, value in params.items() if not np.all(np.isfinite(value))}
    bad_bias = bias if bias is not None and not np.all(np.isfinite(bias)) else None
    if weight_rows is None and bad_bias is None and not bad_params:
        return None
    units = layer.units or (weight_rows.size if weight_rows is not None else 0)
    affected = np.zeros(units, dtype=bool)
    if weight_rows is not None and weight_rows.size == units:
        affected |= weight_rows
    if bad_bias is not None:
        affected |= _per_unit_mask(bad_bias, units)
    for value in bad_params.values():
        affected |= _per_unit_mask(value, units)
    parts = []
    evidence: dict[str, Any] = {"layer": layer.name, "linear": layer.linear, "norm": layer.norm}
    if weight_rows is not None and stats is not None:
        parts.append(f"{stats.nonfinite} weights ({_describe(stats.nonfinite_kinds)})")
        evidence["weights"] = dict(stats.nonfinite_kinds)
    if bad_bias is not None:
        parts.append(f"{int(np.count_nonzero(~np.isfinite(bad_bias)))} bias entries ({_describe(_counts(bad_bias))})")
        evidence["bias"] = _counts(bad_bias)
    for name, value in bad_params.items():
        parts.append(f"{int(np.count_nonzero(~np.isfinite(value)))} {name} entries of '{layer.norm}'")
        evidence[name] = _counts(value)
    count = int(np.count_nonzero(affected))
    return Finding(
        rule=META.id,
        severity=META.severity,
        message=f"non-finite parameters: {', '.join(parts)}; {count} of {units} units output NaN or infinity",
        node=layer.name,
        tensor=layer.weight
        if weight_rows is not None
        else (layer.bias[0].tensor if bad_bias is not None and layer.bias else None),
        units=AffectedUnits(count, units, tuple(int(i) for i in np.flatnonzero(affected)[:5])),
        evidence=evidence,
        fix="restore the last checkpoint with finite parameters and find why training diverged",
    )


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "none"


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    for layer in ctx.layers:
        finding = _finding(ctx, layer)
        if finding is not None:
            yield finding
