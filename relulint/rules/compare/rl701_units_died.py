"""RL701: units that were alive in the older checkpoint and are dead in this one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from relulint.context import Context
from relulint.findings import AffectedUnits, Finding, Severity
from relulint.rules import Option, RuleMeta

if TYPE_CHECKING:
    from relulint.compare_result import LayerChange

META = RuleMeta(
    id="RL701",
    name="units-died-since-checkpoint",
    severity=Severity.ERROR,
    summary="Units that were alive in the older checkpoint (--compare OLD.onnx) and are dead in this one.",
    why="""
A unit that dies during training rarely comes back: once its pre-activation is below zero for every
input, ReLU passes it no gradient. Comparing two checkpoints of one run shows *when* units died and
how many, which a single file cannot: a layer that had every unit alive after initialization and has a
third of them dead one epoch later was damaged by the training itself, most often by a learning rate
that is too high (see RL702 and RL703, which usually fire with it).

A unit counts as dead by the strongest evidence the layer has, judged the same way in both checkpoints,
and that one count is what the finding, the JSON (`compare.layers`) and the HTML report's table show: the probe (it never fired on the same inputs, fed to both checkpoints with the same seed
or `--data`), the proof (its pre-activation is provably at most 0 over `--input-range`), and the static
margins (its bias puts it more than the margins analysis's `k` standard deviations below zero, `[tool.relulint.margins] k`). A weaker source never adds
units to a stronger one's count (a unit the probe saw fire is alive, whatever its margin says); what the
other sources count is in the finding's evidence. The finding is an error
when the probe or the proof shows the death, a warning when only the static margins do. A layer is
reported when more than `min_fraction` of its units died: on a few dozen probe samples, a unit that
was rarely active can look dead in one checkpoint and not in the other.

The static margins model each unit's pre-activation spread but not the mean its input adds through
`Σw`; a large step that shifts a whole layer's weights negative kills units without moving their
margins, so the probe is the evidence to trust (keep it on, and pass `--data` when you can).
""",
    fix="""
Restart from the older checkpoint with a lower learning rate (or a warm-up), gradient clipping, or a
smaller batch-size-to-rate ratio; check that no loss spike or bad batch happened between the two. If the
units are needed, re-initialize them (He init, zero bias) before continuing.
""",
    example="""
```bash
relulint checkpoints/epoch_2.onnx --compare checkpoints/epoch_1.onnx
# fc2_relu [RL701] error: 46 of 64 units alive in epoch_1.onnx are dead here: the probe saw them never fire ...
```
""",
    options=(
        Option(
            "min_fraction",
            float,
            0.05,
            "Report a layer only when more than this fraction of its units died (one or two units of a wide "
            "layer can flip on a few probe samples).",
        ),
        Option("worst", int, 5, "How many of the units that died to list."),
    ),
    needs=("compare",),
    tags=("checkpoint",),
)

SOURCE_NAMES = {"probe": "the probe", "proof": "the proof", "margins": "the static margins"}
SOURCE_TEXT = {
    "probe": "the probe saw {n} never fire on the same inputs",
    "proof": "the bounds over the input domain prove {n} dead",
    "margins": "static margins put {n} more than {k:g} standard deviations below zero",
}


def check(ctx: Context, options: dict[str, Any]) -> Iterator[Finding]:
    result = ctx.analyses.compare
    if result is None:
        return
    for layer in ctx.layers:
        change = result.layers.get(layer.name)
        if change is None or not change.units:
            continue
        source = change.strongest_source()
        if source is None:
            continue
        died = change.newly_dead(source)
        fraction = died.size / change.units
        if not died.size or fraction <= options["min_fraction"]:
            continue
        by_source = {s: change.newly_dead(s) for s in change.dead_new if s in change.dead_old}
        others = [
            f"{SOURCE_NAMES[s]}: {units.size}"
            for s, units in by_source.items()
            if s != source and units.size != died.size
        ]
        worst = [int(i) for i in died[: options["worst"]]]
        yield Finding(
            rule=META.id,
            severity=Severity.ERROR if source in ("probe", "proof") else Severity.WARNING,
            message=(
                f"{died.size} of {change.units} units ({fraction:.1%}) alive in {result.old_path} are dead here: "
                f"{SOURCE_TEXT[source].format(n=died.size, k=result.margin_k)}{_counts(change, source)}"
                f"{' (other sources count ' + ', '.join(others) + ')' if others else ''} "
                f"(first: {', '.join(str(i) for i in worst)})"
            ),
            node=layer.name,
            tensor=layer.pre_activation,
            units=AffectedUnits(int(died.size), change.units, tuple(worst)),
            evidence={
                "layer": layer.name,
                "linear": layer.linear,
                "old": result.old_path,
                "died": int(died.size),
                "source": source,
                "units": change.units,
                "fraction": fraction,
                "by_source": {s: [int(i) for i in units] for s, units in by_source.items()},
                **{s: _summary(change, s) for s in by_source},
                "relative_update": change.relative_update,
            },
            fix=f"restart from {result.old_path} with a lower learning rate (or a warm-up) and gradient clipping",
        )


def _counts(change: LayerChange, source: str) -> str:
    return f" (dead in the old checkpoint: {int(change.dead_old[source].sum())}, here: {int(change.dead_new[source].sum())})"


def _summary(change: LayerChange, source: str) -> dict[str, int]:
    return {
        "dead_old": int(change.dead_old[source].sum()),
        "dead_new": int(change.dead_new[source].sum()),
        "newly_dead": int(change.newly_dead(source).size),
    }
