"""RL402: a ReLU on the model's output, or right before a final Softmax, LogSoftmax or Sigmoid."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from relulint.context import Context
from relulint.findings import Finding, Severity
from relulint.rules import Option, RuleMeta
from relulint.units import PLAIN, Layer, OutputPath

META = RuleMeta(
    id="RL402",
    name="relu-on-output",
    severity=Severity.WARNING,
    summary="A ReLU on the model's output, or right before a final Softmax, LogSoftmax or Sigmoid.",
    why="""
The last linear layer of a classifier or a regressor produces logits or values that must be free to go
negative. A ReLU after it clips every negative output to zero and passes no gradient for it, so an output
unit that starts (or drifts) negative for an input can never be pulled back by the loss on that input, and
a unit that is negative for all inputs is dead for good: the model can no longer express that class or
value. Before a Softmax or LogSoftmax the clipped logits all become equal, so the model cannot rank the
classes it has pushed below zero; before a Sigmoid the output can never go below 0.5.

The ReLU is found through ops that only move the data (Reshape, Flatten, Squeeze, Transpose, Concat,
Dropout, Identity, ...) and through the branches of `If` nodes. A ReLU whose output also feeds other
computation is an intermediate feature exported as an extra output, and is not reported.
""",
    fix="""
Remove the activation after the last linear layer: return the raw logits (and let the loss apply Softmax
or Sigmoid), or the raw regression values. If the output must be non-negative (counts, variances,
distances), use Softplus or `exp`, which keep a gradient everywhere. If the ReLU is intended (a feature
extractor exported without its head), ignore the rule for that node with `per-node-ignores`.
""",
    example="""
```python
model = torch.nn.Sequential(
    torch.nn.Linear(64, 128), torch.nn.ReLU(),
    torch.nn.Linear(128, 10), torch.nn.ReLU(),   # clips the logits
    torch.nn.Softmax(dim=-1),
)
```
""",
    options=(
        Option(
            "final_ops",
            str,
            "Softmax,LogSoftmax,Sigmoid",
            "Comma-separated ops that count as the model's final squashing op: a ReLU right before one whose "
            "output is a model output is reported.",
        ),
    ),
    tags=("architecture", "output"),
)


def describe(layer: Layer, path: OutputPath) -> str:
    if path.final_op is None:
        return (
            f"{layer.activation_op} '{layer.name}' produces the model output '{path.output}': negative outputs "
            "are clipped to 0 and pass no gradient"
        )
    consequence = (
        "the output can never go below 0.5"
        if path.final_op == "Sigmoid"
        else "every negative logit becomes 0, so those classes can no longer be ranked"
    )
    return (
        f"{layer.activation_op} '{layer.name}' sits right before the final {path.final_op} of output "
        f"'{path.output}': {consequence}, and clipped logits pass no gradient"
    )


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    final_ops = {op.strip() for op in options["final_ops"].split(",") if op.strip()}
    for layer in ctx.layers:
        if layer.family != PLAIN:
            continue  # variants keep a gradient below zero (Softplus on an output is the fix, not a bug)
        paths, consumed_elsewhere = ctx.output_paths(layer, final_ops)
        if not paths or consumed_elsewhere:
            continue
        path = paths[0]
        yield Finding(
            rule=META.id,
            severity=META.severity,
            message=describe(layer, path),
            node=layer.name,
            tensor=path.output,
            evidence={
                "output": path.output,
                "final_op": path.final_op,
                "outputs": sorted({p.output for p in paths}),
                "linear": layer.linear,
            },
            fix=f"remove the {layer.activation_op} after '{layer.linear or 'the last layer'}' and return the raw values",
        )
