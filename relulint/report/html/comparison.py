"""The "Compared with OLD" section (``--compare OLD``): its rows, facts and charts, from the ``CompareResult``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from relulint.bounds.result import BoundsResult
from relulint.compare_result import SOURCES, CompareResult, LayerChange
from relulint.report.html.charts import (
    MIN_BAR,
    Bar,
    Chart,
    Tick,
    columns,
    log_range,
    percent_axis,
    percent_text,
    x_labels,
    y_scale,
)
from relulint.report.html.format import domain_text, fmt_number, fmt_percent, number
from relulint.report.text import clean

# How each source of the checkpoint comparison (relulint.compare.SOURCES) counts a unit as dead.
DEAD_SOURCE_TEXT = {
    "probe": ("probe", "never positive on the same inputs, fed to both checkpoints"),
    "proof": ("proof", "pre-activation at most 0 for every input of the domain"),
    "margins": ("static margins", "bias more than {k:g} standard deviations of the pre-activation below zero"),
}


@dataclass(frozen=True)
class DeadChange:
    """One layer's dead units in OLD and NEW, counted by one source (probe, proof or margins)."""

    source: str
    old: int | None
    new: int | None
    fraction_old: float | None
    fraction_new: float | None
    newly_dead: int | None
    revived: int | None


@dataclass(frozen=True)
class ChangeView:
    """One row of the comparison table: a layer of this model against the same layer in OLD."""

    index: int  # the layer's number in the Layers table (0-based)
    name: str
    units: int | None
    relative_update: float | None
    weight_norm_old: float | None
    weight_norm_new: float | None
    bias_shift_min: float | None  # in standard deviations of OLD's pre-activation
    bias_shift_mean: float | None
    dead: DeadChange | None  # by the comparison's main source, else by the strongest one this layer has
    others: tuple[DeadChange, ...]  # the remaining sources, for the reader who wants them all
    update_flagged: bool  # above the bound, or an RL702 finding names the layer
    bias_flagged: bool  # a unit's bias dropped by more than RL703's k


@dataclass
class CompareView:
    old_path: str
    old_sha256: str
    same_file: bool
    source: str | None  # the main source of dead counts: the strongest one any layer has
    source_text: tuple[str, str]  # (its name, how it counts a unit as dead and on what)
    max_update: float  # RL702's bound
    bias_k: float  # RL703's threshold, in standard deviations
    dead_line: float  # RL501's error_fraction, as on the model's dead-fraction chart
    layers: list[ChangeView]
    charts: list[Chart]

    @property
    def newly_dead(self) -> int:
        return sum(layer.dead.newly_dead or 0 for layer in self.layers if layer.dead)

    @property
    def revived(self) -> int:
        return sum(layer.dead.revived or 0 for layer in self.layers if layer.dead)

    @property
    def largest_update(self) -> ChangeView | None:
        measured = [layer for layer in self.layers if layer.relative_update is not None]
        return max(measured, key=lambda layer: layer.relative_update or 0.0) if measured else None


def dead_change(source: str, change: LayerChange) -> DeadChange | None:
    counts = change.dead_counts(source)
    if counts is None:
        return None
    return DeadChange(
        source=source,
        old=counts.old,
        new=counts.new,
        fraction_old=counts.fraction_old,
        fraction_new=counts.fraction_new,
        newly_dead=counts.newly_dead,
        revived=counts.revived,
    )


def source_name(source: str | None) -> str:
    """probe, proof, static margins (what a source of dead counts is called on the page)."""
    return DEAD_SOURCE_TEXT[source][0] if source in DEAD_SOURCE_TEXT else (source or "none")


def dead_source_text(source: str | None, compare: CompareResult, bounds: BoundsResult | None) -> tuple[str, str]:
    """(source, how it counts a unit as dead and on what) for the comparison's main source."""
    if source is None:
        return "none", "no source could count dead units in both checkpoints (the notes say why)"
    name, how = source_name(source), DEAD_SOURCE_TEXT.get(source, ("", ""))[1]
    how = how.format(k=number(compare.margin_k) or 0.0)
    probe = compare.probe_inputs
    if source == "probe" and probe is not None and probe.described:
        how += f": {probe.described}"
        if probe.old_samples != probe.samples:
            how += f" ({probe.old_samples} samples for OLD)"
    if source == "proof" and bounds is not None and domain_text(bounds.domain):
        how += f": {domain_text(bounds.domain)}"
    return name, how


def compare_view(
    compare: CompareResult,
    order: dict[str, int],
    flagged_updates: set[str],
    options: tuple[float, float, float],
    bounds: BoundsResult | None = None,
) -> CompareView:
    """The comparison section of one model from the checkpoint comparison's result.

    ``order`` maps layer names to their number in the Layers table; ``flagged_updates`` names the layers
    RL702 reported; ``options`` is (RL702's max_update, RL703's k, RL501's error_fraction) as configured for
    the run.
    """
    max_update, bias_k, dead_line = options
    source = next(iter(compare.sources), None)  # the strongest source any layer was counted by
    names = sorted(compare.layers, key=lambda name: (order.get(name, len(order)), name))
    rows = []
    for position, name in enumerate(names):
        change = compare.layers[name]
        changes = [c for c in (dead_change(s, change) for s in SOURCES) if c is not None]
        main = next((c for c in changes if c.source == source), changes[0] if changes else None)
        lowest_shift, mean_shift = change.bias_shift_summary()
        update, shift = number(change.relative_update), number(lowest_shift)
        rows.append(
            ChangeView(
                index=order.get(name, len(order) + position),
                name=name,
                units=change.units,
                relative_update=update,
                weight_norm_old=number(change.weight_norm_old),
                weight_norm_new=number(change.weight_norm_new),
                bias_shift_min=shift,
                bias_shift_mean=number(mean_shift),
                dead=main,
                others=tuple(c for c in changes if c is not main),
                update_flagged=name in flagged_updates or (update is not None and update > max_update),
                bias_flagged=shift is not None and shift < -bias_k,
            )
        )
    view = CompareView(
        old_path=compare.old_path or "?",
        old_sha256=compare.old_sha256 or "",
        same_file=compare.same_file,
        source=source,
        source_text=dead_source_text(source, compare, bounds),
        max_update=max_update,
        bias_k=bias_k,
        dead_line=dead_line,
        layers=rows,
        charts=[],
    )
    view.charts = [dead_change_chart(view), update_chart(view)]
    return view


def dead_change_chart(view: CompareView) -> Chart:
    line = view.dead_line
    chart = Chart(
        title="Dead units: OLD against NEW",
        description=(
            "Share of each layer's units counted dead in the older checkpoint (OLD) and in this one (NEW), "
            f"by the {source_name(view.source)}; the dashed line is RL501's error_fraction, {percent_text(line)}."
        ),
        legend=[
            ("bar-old", "OLD"),
            ("bar-ok", "NEW"),
            ("bar-bad", f"NEW over {percent_text(line)}"),
            ("reference", f"{percent_text(line)} line"),
        ],
    )
    if not view.layers:
        chart.empty = "No ReLU-family layers to compare."
        return chart
    if all(layer.dead is None for layer in view.layers):
        chart.empty = "Dead units could not be counted in both checkpoints (the notes say why)."
        return chart
    scale = y_scale(chart, 1.0)
    band, _ = columns(chart, len(view.layers))
    gap = 2.0
    bar = max(min(band * 0.8, 56.0) - gap, 2.0) / 2
    for slot, layer in enumerate(view.layers):
        if layer.dead is None:
            continue
        centre = chart.left + band * (slot + 0.5)
        label = f"{layer.index + 1}. {clean(layer.name)}"
        by = "" if layer.dead.source == view.source else f" (by the {source_name(layer.dead.source)})"
        pairs = (
            (layer.dead.fraction_old, layer.dead.old, centre - gap / 2 - bar, "bar-old", "OLD"),
            (layer.dead.fraction_new, layer.dead.new, centre + gap / 2, None, "NEW"),
        )
        for value, count, x, css, which in pairs:
            if value is None:
                continue
            y = scale(value)
            count_text = f" ({count:,} of {layer.units:,})" if count is not None and layer.units else ""
            title = f"{label}: {fmt_percent(value)} dead in {which}{count_text}{by}"
            if which == "NEW" and layer.dead.newly_dead:
                title += f", {layer.dead.newly_dead:,} newly dead"
            chart.bars.append(
                Bar(
                    x=x,
                    y=min(y, chart.baseline - MIN_BAR),
                    width=bar,
                    height=max(chart.baseline - y, MIN_BAR),
                    css=css or ("bar-bad" if value > line else "bar-ok"),
                    title=title,
                )
            )
    percent_axis(chart, scale, line)
    chart.x_labels = layer_axis(chart, view)
    return chart


def update_chart(view: CompareView) -> Chart:
    """The relative update per layer on a log scale (updates span decades), with RL702's bound."""
    bound = view.max_update
    chart = Chart(
        title="Relative weight update per layer",
        description=(
            "‖W_new − W_old‖ / ‖W_old‖ of the weights feeding each layer, on a log scale; "
            + (f"the dashed line is RL702's bound {bound:g}." if bound > 0 else "RL702 has no bound set.")
        ),
        legend=[("bar-ok", "relative update"), ("bar-warn", "above the bound or flagged by RL702")]
        + ([("reference", f"RL702 bound {bound:g}")] if bound > 0 else []),
        right=64,
        reference_outside=True,
    )
    if not view.layers:
        chart.empty = "No ReLU-family layers to compare."
        return chart
    values = [layer.relative_update for layer in view.layers]
    if all(value is None for value in values):
        chart.empty = "No layer has weights that could be compared (missing, non-finite, or all zero in OLD)."
        return chart
    low, high = log_range([v for v in values if v is not None and v > 0], bound)

    def scale(value: float) -> float:
        share = (math.log10(value) - low) / (high - low) if value > 0 else 0.0
        return chart.baseline - chart.plot_height * min(max(share, 0.0), 1.0)

    band, width = columns(chart, len(view.layers))
    for slot, (layer, value) in enumerate(zip(view.layers, values)):
        if value is None:
            continue
        y = min(scale(value), chart.baseline - MIN_BAR)
        title = f"{layer.index + 1}. {clean(layer.name)}: ‖ΔW‖/‖W_old‖ = {fmt_number(value)}"
        if value == 0:
            title += " (unchanged)"
        elif value < 10.0**low:
            title += " (below the chart's floor)"
        css = "bar-warn" if layer.update_flagged else "bar-ok"
        chart.bars.append(Bar(chart.left + band * (slot + 0.5) - width / 2, y, width, chart.baseline - y, css, title))
    chart.grid = [
        Tick(chart.left, scale(10.0**power), chart.left + chart.plot_width, scale(10.0**power), f"{10.0**power:g}")
        for power in range(low, high + 1)
    ]
    if bound > 0 and 10.0**low <= bound <= 10.0**high:
        y = scale(bound)
        chart.reference = Tick(chart.left, y, chart.left + chart.plot_width, y, f"bound {bound:g}")
    chart.x_labels = layer_axis(chart, view)
    return chart


def layer_axis(chart: Chart, view: CompareView) -> list[Tick]:
    """The compared layers' names, numbered as in the Layers table."""
    return x_labels(chart, [layer.name for layer in view.layers], [layer.index + 1 for layer in view.layers])
