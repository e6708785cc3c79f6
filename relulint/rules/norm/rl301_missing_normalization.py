"""RL301: a long chain of linear+ReLU layers with no normalization anywhere in it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from relulint.chains import FOLDED_HINT, Link, batchnorm_may_be_folded, chains, longest_run
from relulint.context import Context
from relulint.findings import Finding, Severity
from relulint.rules import Option, RuleMeta
from relulint.units import PLAIN, Layer

META = RuleMeta(
    id="RL301",
    name="missing-normalization",
    severity=Severity.WARNING,
    summary="A chain of consecutive linear+ReLU layers with no normalization layer between them.",
    why="""
Without normalization, the scale and the mean of each layer's pre-activations depend on every weight and
bias before it. Small errors in the initialization compound with depth: after a few layers the
pre-activations of some units sit below zero for (almost) every input, and a ReLU passes no gradient
there, so those units stop learning and stay dead. A large learning-rate step can push whole layers the
same way. BatchNormalization, LayerNormalization, GroupNormalization and InstanceNormalization re-centre
and re-scale every layer's pre-activations, which keeps about half of each unit's inputs on the active
side whatever happened upstream.

Layers are *consecutive* when one layer's ReLU output reaches the next layer's linear op (Conv, Gemm,
MatMul) through ops that only move, pool, pad or scale the data. Residual connections do not count as
normalization: a residual network without normalization layers still drifts (it needs a scheme such as
Fixup to train). The chain is reported once, at its last layer, with the names of its layers.

An export for inference can hide normalization that was there in training: `torch.onnx.export` in eval
mode folds each BatchNorm that follows a Conv into the Conv's weight and bias, and onnxoptimizer and
onnxsim do the same. A fold leaves marks, and the rule asks for them: it turns the Conv's bias into
`beta - gamma * mean / sigma` (never all zero) and multiplies each output channel by its own
`gamma / sigma` (the channels' weight scales then differ far beyond sampling noise). So in a model with no
BatchNormalization node at all, a Conv layer with a non-zero bias and such channel scales may be
normalized after all; a Conv with no bias, an all-zero bias, or channels that share one weight scale
cannot be. A chain is then a warning only when it holds at least `min_length` consecutive layers that
cannot hide a folded BatchNorm (those Convs, Gemm, MatMul), and a note otherwise (set
`assume_folded_batchnorm` to false to report such chains as warnings).
""",
    fix="""
Insert a normalization between the linear op and the ReLU of each layer (`Conv -> BatchNorm -> ReLU`,
`Linear -> LayerNorm -> ReLU`, or `Linear -> BatchNorm1d -> ReLU`). If the model is deliberately
normalization-free (small batches, Fixup, SkipInit, NFNets), initialize it for that and raise
`min_length`, or ignore the rule for the model.
""",
    example="""
```python
model = torch.nn.Sequential(          # four Linear+ReLU layers in a row, no normalization
    torch.nn.Linear(64, 256), torch.nn.ReLU(),
    torch.nn.Linear(256, 256), torch.nn.ReLU(),
    torch.nn.Linear(256, 256), torch.nn.ReLU(),
    torch.nn.Linear(256, 256), torch.nn.ReLU(),
    torch.nn.Linear(256, 10),
)
```

Use instead:

```python
def block(fan_in, units):
    return [torch.nn.Linear(fan_in, units), torch.nn.BatchNorm1d(units), torch.nn.ReLU()]
```
""",
    options=(
        Option(
            "min_length", int, 4, "Report a chain of at least this many consecutive unnormalized linear+ReLU layers."
        ),
        Option(
            "include_variants",
            bool,
            False,
            "Count layers with ReLU variants (LeakyReLU, PReLU, ELU, GELU, ...) too; by default only the plain "
            "ReLU family (Relu, ReLU6, Max(x, 0)), whose units can die.",
        ),
        Option(
            "assume_folded_batchnorm",
            bool,
            True,
            "In a model with no BatchNormalization node, treat Conv layers as possibly normalized (BatchNorm "
            "folded into their weights by the export) and report chains that rest on them as notes.",
        ),
    ),
    tags=("normalization", "structure"),
)


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    min_length = options["min_length"]
    include_variants = options["include_variants"]

    def member(layer: Layer, link: Link) -> bool:
        family_ok = layer.family == PLAIN or include_variants
        return layer.linear is not None and layer.norm is None and family_ok

    def joins(layer: Layer, link: Link) -> bool:
        return not link.normalized_between

    for chain in chains(ctx, member, joins):
        if len(chain) < min_length:
            continue
        last = chain[-1]
        names = [layer.name for layer in chain]
        may_be_folded = [batchnorm_may_be_folded(ctx, layer) for layer in chain]
        severity, hint = META.severity, ""
        if any(may_be_folded) and options["assume_folded_batchnorm"]:
            # Warn only when enough consecutive layers cannot hide a folded BatchNorm on their own.
            certain = longest_run([not flag for flag in may_be_folded])
            if certain < min_length:
                severity, hint = Severity.NOTE, f"; but {FOLDED_HINT}"
        yield Finding(
            rule=META.id,
            severity=severity,
            message=(
                f"{len(chain)} consecutive linear+ReLU layers without normalization, from '{names[0]}' to "
                f"'{last.name}'; their pre-activations can drift below zero and units die{hint}"
            ),
            node=last.name,
            tensor=last.output,
            evidence={
                "length": len(chain),
                "chain": names,
                "linear_ops": [layer.linear for layer in chain],
                "residual_joins": sum(layer.residual for layer in chain),
                "batchnorm_may_be_folded": sum(may_be_folded),
                "min_length": min_length,
            },
            fix=f"add a normalization (e.g. BatchNormalization) between the linear op and the ReLU of these {len(chain)} layers",
        )
