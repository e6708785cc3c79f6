"""RL401: a deep stack of plain-ReLU layers with no residual path and no ReLU variant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from relulint.chains import FOLDED_HINT, Link, batchnorm_may_be_folded, chains, links
from relulint.context import Context
from relulint.findings import Finding, Severity
from relulint.rules import Option, RuleMeta
from relulint.units import PLAIN, Layer

META = RuleMeta(
    id="RL401",
    name="plain-relu-stack",
    severity=Severity.WARNING,
    summary="A deep stack of consecutive plain-ReLU layers with no residual connection and no ReLU variant.",
    why="""
A plain ReLU passes no gradient for a negative pre-activation. In a deep stack of ReLU layers with no
residual connection, the gradient of an early layer reaches it only through every ReLU after it, so each
layer that has drifted towards inactivity cuts the gradient of everything before it. Dead units then stay
dead, and the deeper the stack the more places there are for units to die. Residual connections give the
gradient a path around the layers, and leaky activations give it a non-zero slope below zero; very deep
plain stacks train worse than shallower ones, which is what residual networks were introduced to fix.

Layers are *consecutive* when one layer's ReLU output reaches the next layer's linear op through ops that
only move, pool, pad, scale or normalize the data. A layer with a residual join before its activation ends
the stack (the shortcut carries the gradient around the layers before it), and so does a ReLU variant.
The stack is reported once, at its last layer.

Normalization keeps each layer's pre-activations centred, which keeps about half of every unit's inputs
active, so a stack whose layers are mostly normalized (at least `normalized_fraction` of them, as in a VGG
with BatchNorm in its convolutions and none in its two hidden classifier layers) is reported as a note only.
In a model with no BatchNormalization node at all, Conv layers that carry the marks of a fold (a non-zero
bias, per-channel weight scales far apart) count as possibly normalized, because an export for inference
folds BatchNorm into the Conv weights (see RL301; option `assume_folded_batchnorm`).
""",
    fix="""
Give the gradient another path or a non-zero slope:

- add residual connections every two or three layers (`y = relu(x + f(x))`);
- or replace ReLU with LeakyReLU, PReLU or ELU, whose negative side keeps a gradient;
- or make the network shallower.
""",
    example="""
```python
layers = []
for _ in range(8):                     # eight Linear+ReLU layers, no shortcut
    layers += [torch.nn.Linear(256, 256), torch.nn.ReLU()]
model = torch.nn.Sequential(*layers, torch.nn.Linear(256, 10))
```

Use instead, for example:

```python
layers += [torch.nn.Linear(256, 256), torch.nn.LeakyReLU(0.01)]
```
""",
    options=(
        Option("min_length", int, 8, "Report a stack of at least this many consecutive plain-ReLU layers."),
        Option(
            "normalized_fraction",
            float,
            0.75,
            "Report a stack in which at least this fraction of the layers is normalized as a note, not at the "
            "rule's severity (above 1: never).",
        ),
        Option(
            "assume_folded_batchnorm",
            bool,
            True,
            "In a model with no BatchNormalization node, count Conv layers as possibly normalized (BatchNorm "
            "folded into their weights by the export).",
        ),
    ),
    tags=("architecture", "structure"),
)


def is_normalized(layer: Layer, link: Link) -> bool:
    """A normalization between the layer's linear op and its ReLU, or right before the linear op."""
    return layer.norm is not None or link.normalized_between


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    min_length = options["min_length"]
    link_of = links(ctx)

    def member(layer: Layer, link: Link) -> bool:
        return layer.linear is not None and layer.family == PLAIN and not layer.residual

    def joins(layer: Layer, link: Link) -> bool:
        return True

    for chain in chains(ctx, member, joins):
        if len(chain) < min_length:
            continue
        last = chain[-1]
        names = [layer.name for layer in chain]
        normalized = sum(is_normalized(layer, link_of[layer.name]) for layer in chain)
        folded = 0
        if options["assume_folded_batchnorm"]:
            folded = sum(batchnorm_may_be_folded(ctx, layer) for layer in chain)
        mostly_normalized = normalized + folded >= options["normalized_fraction"] * len(chain)
        severity = Severity.NOTE if mostly_normalized else META.severity
        detail = "every layer normalized" if normalized == len(chain) else f"{normalized} of them normalized"
        if folded:
            detail += f"; {FOLDED_HINT}"
        yield Finding(
            rule=META.id,
            severity=severity,
            message=(
                f"{len(chain)} consecutive plain-ReLU layers with no residual connection, from '{names[0]}' to "
                f"'{last.name}' ({detail}); a unit that dies cuts the gradient of every layer before it"
            ),
            node=last.name,
            tensor=last.output,
            evidence={
                "length": len(chain),
                "chain": names,
                "normalized_layers": normalized,
                "batchnorm_may_be_folded": folded,
                "normalized_fraction": options["normalized_fraction"],
                "min_length": min_length,
            },
            fix="add residual connections every few layers, or use LeakyReLU, PReLU or ELU in this stack",
        )
