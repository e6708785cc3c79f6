"""``--format html``: one self-contained page (inline CSS, JS and SVG) that makes no network request.

The page is rendered with jinja2 and autoescaping; everything a model supplies (paths, node
and tensor names, producer, messages built from them) reaches the page only through the
``show`` filter, which also makes control characters visible. A Content-Security-Policy
allows only this page's own script (by hash) and no request to anywhere, so even a
mistake in escaping could neither run a script nor load anything.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from relulint import INFORMATION_URI, __version__
from relulint.compare import SOURCES
from relulint.config import Config
from relulint.findings import ModelResult, Severity
from relulint.report import Run
from relulint.report.text import clean, summary
from relulint.rules import DOCS_BASE, rule_by_id

# The reference line on the dead-fraction chart: above it, most of a layer is lost.
DEAD_LINE = 0.40
# A layer's weight std more than this factor away from He's is drawn highlighted.
HE_FACTOR = 2.0
# A measured zero still gets a sliver of a bar, so that it reads as "0", not as "not measured".
MIN_BAR = 1.5
SEVERITY_ORDER = [Severity.ERROR, Severity.WARNING, Severity.NOTE]
# The relative-update chart spans at most this many decades: smaller updates sit on its floor.
MAX_DECADES = 6
# How each source of the checkpoint comparison (relulint.compare.SOURCES) counts a unit as dead.
DEAD_SOURCE_TEXT = {
    "probe": ("probe", "never positive on the same inputs, fed to both checkpoints"),
    "proof": ("proof", "pre-activation at most 0 for every input of the domain"),
    "margins": ("static margins", "bias more than {k:g} standard deviations of the pre-activation below zero"),
}


# ---- text ------------------------------------------------------------------------------------
def show(value: Any) -> Markup:
    """Model-supplied text for the page: control characters made visible, then HTML-escaped."""
    return escape(clean("" if value is None else str(value)))


def show_code(value: Any) -> Markup:
    """Like ``show``, and `backticked` spans (rules write them in messages) become <code>."""
    parts = clean("" if value is None else str(value)).split("`")
    if len(parts) % 2 == 0:  # unbalanced backticks: show them as they are
        return escape("`".join(parts))
    return Markup("").join(escape(p) if i % 2 == 0 else Markup("<code>%s</code>") % p for i, p in enumerate(parts))


def number(value: Any) -> float | None:
    """A finite float from a JSON value ("nan"/"inf" strings and missing values become None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def fmt_number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 10_000 or abs(value) < 0.001:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{max(digits - 1, 0)}f}".rstrip("0").rstrip(".")


def fmt_percent(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.1f}%" if value < 0.999 or value == 1 else f"{value * 100:.2f}%"


def fmt_time(iso: str) -> str:
    """2024-01-02T03:04:05Z -> 2024-01-02 03:04:05 UTC (other text is shown as it is)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)Z", iso)
    return f"{match.group(1)} {match.group(2)} UTC" if match else iso


def fmt_bytes(size: Any) -> str:
    value = number(size)
    if value is None:
        return "—"
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return "—"


# ---- charts (coordinates here; the template draws them, so every label is escaped) -----------
@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True)
class Tick:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str = ""


@dataclass
class Chart:
    title: str
    description: str
    width: int = 640
    height: int = 220
    bars: list[Bar] = field(default_factory=list)
    markers: list[Tick] = field(default_factory=list)  # short horizontal marks (e.g. He std)
    grid: list[Tick] = field(default_factory=list)  # y grid lines with their labels
    reference: Tick | None = None  # the dashed threshold line
    reference_outside: bool = False  # its label right of the plot (in a wider margin), clear of tall bars
    x_labels: list[Tick] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css class, text)
    empty: str = ""  # why there is nothing to draw

    left: int = 48
    right: int = 16
    top: int = 14
    bottom: int = 30

    @property
    def plot_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> float:
        return self.height - self.top - self.bottom

    @property
    def baseline(self) -> float:
        return self.top + self.plot_height


def _columns(chart: Chart, count: int) -> tuple[float, float]:
    """(band width, bar width) for ``count`` columns across the plot."""
    band = chart.plot_width / max(count, 1)
    return band, max(min(band * 0.7, 36.0), 1.0)


def _x_labels(chart: Chart, count: int) -> list[Tick]:
    """Layer numbers under the columns; every k-th one when there are many."""
    band, _ = _columns(chart, count)
    step = max(1, math.ceil(count / 24))
    return [
        Tick(chart.left + band * (i + 0.5), chart.baseline + 16, 0, 0, str(i + 1))
        for i in range(count)
        if i % step == 0 or i == count - 1
    ]


def _y_scale(chart: Chart, top_value: float) -> Any:
    return lambda value: chart.baseline - chart.plot_height * (value / top_value if top_value else 0.0)


def dead_fraction_chart(layers: list[LayerView], probe_ran: bool) -> Chart:
    chart = Chart(
        title="Dead units per layer",
        description=(
            "Share of each layer's units that never switched on during the probe, in depth order; "
            f"the dashed line marks {DEAD_LINE:.0%}."
        ),
        legend=[
            ("bar-ok", "dead fraction"),
            ("bar-bad", f"over {DEAD_LINE:.0%}"),
            ("reference", f"{DEAD_LINE:.0%} line"),
        ],
    )
    measured = [layer.dead_fraction for layer in layers]
    if not layers:
        chart.empty = "No ReLU-family layers in this model."
        return chart
    if all(value is None for value in measured):
        chart.empty = (
            "The probe did not run on this model (it is off with --no-probe; otherwise the notes say why)."
            if not probe_ran
            else "The probe measured no layer."
        )
        return chart
    scale = _y_scale(chart, 1.0)
    band, width = _columns(chart, len(layers))
    for index, (layer, value) in enumerate(zip(layers, measured)):
        if value is None:
            continue
        y = scale(value)
        chart.bars.append(
            Bar(
                x=chart.left + band * (index + 0.5) - width / 2,
                y=min(y, chart.baseline - MIN_BAR),
                width=width,
                height=max(chart.baseline - y, MIN_BAR),
                css="bar-bad" if value >= DEAD_LINE else "bar-ok",
                title=f"{index + 1}. {clean(layer.name)}: {fmt_percent(value)} dead",
            )
        )
    _percent_axis(chart, scale)
    chart.x_labels = _x_labels(chart, len(layers))
    return chart


def _percent_axis(chart: Chart, scale: Any) -> None:
    """Grid lines at 0, 25, .. 100% and the dashed DEAD_LINE, for the dead-fraction charts."""
    chart.grid = [
        Tick(chart.left, scale(v), chart.left + chart.plot_width, scale(v), f"{v:.0%}") for v in (0, 0.25, 0.5, 0.75, 1)
    ]
    y = scale(DEAD_LINE)
    chart.reference = Tick(chart.left, y, chart.left + chart.plot_width, y, f"{DEAD_LINE:.0%}")


def he_chart(layers: list[LayerView]) -> Chart:
    chart = Chart(
        title="Weight std against He initialization",
        description=(
            "Standard deviation of each layer's weights (bars) and the He value sqrt(2 / fan-in) (marks); "
            f"bars more than {HE_FACTOR:g}× away from He are highlighted."
        ),
        legend=[("bar-ok", "weight std"), ("bar-warn", f"over {HE_FACTOR:g}× off He"), ("marker", "He std")],
    )
    pairs = [(layer.weight_std, layer.he_std) for layer in layers]
    if not layers:
        chart.empty = "No ReLU-family layers in this model."
        return chart
    values = [v for pair in pairs for v in pair if v is not None]
    if not values:
        chart.empty = "No layer has a weight matrix relulint could read."
        return chart
    step = _nice_step(max(values) * 1.05 / 4)  # about four grid lines at round numbers
    steps = max(math.ceil(max(values) * 1.05 / step), 1)
    top_value = step * steps
    scale = _y_scale(chart, top_value)
    band, width = _columns(chart, len(layers))
    for index, (layer, (std, he)) in enumerate(zip(layers, pairs)):
        centre = chart.left + band * (index + 0.5)
        if std is not None:
            off = he is not None and he > 0 and (std > he * HE_FACTOR or std < he / HE_FACTOR)
            y = scale(std)
            title = f"{index + 1}. {clean(layer.name)}: std {fmt_number(std)}, He {fmt_number(he)}"
            y = min(y, chart.baseline - MIN_BAR)
            chart.bars.append(
                Bar(centre - width / 2, y, width, chart.baseline - y, "bar-warn" if off else "bar-ok", title)
            )
        if he is not None:
            reach = max(width / 2 + 3, 4)
            chart.markers.append(Tick(centre - reach, scale(he), centre + reach, scale(he), f"He {fmt_number(he)}"))
    chart.grid = [
        Tick(chart.left, scale(v), chart.left + chart.plot_width, scale(v), f"{v:.6g}")
        for v in (step * i for i in range(steps + 1))
    ]
    chart.x_labels = _x_labels(chart, len(layers))
    return chart


def _nice_step(value: float) -> float:
    """The next 1, 2 or 5 × 10^k at or above ``value``: grid lines at round numbers."""
    if value <= 0:
        return 0.25
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value * (1 - 1e-9))


@dataclass(frozen=True)
class Histogram:
    """Units of one layer by how often the probe saw them positive (first bar: never)."""

    bars: list[Bar]
    width: int = 112
    height: int = 26


def positive_rate_histogram(rates: list[Any]) -> Histogram | None:
    values = [v for v in (number(r) for r in rates) if v is not None]
    if not values:
        return None
    dead = sum(1 for v in values if v <= 0)
    bins = [0] * 10
    for v in values:
        if v > 0:
            bins[min(int(v * 10), 9)] += 1
    counts = [dead, *bins]
    tallest = max(counts) or 1
    bar_width = 112 / len(counts)
    labels = ["never positive"] + [f"positive {i * 10}–{(i + 1) * 10}% of the time" for i in range(10)]
    bars = []
    for index, (count, label) in enumerate(zip(counts, labels)):
        height = 24 * count / tallest if count else 0.0
        css = "hist-dead" if index == 0 else ("hist-rare" if index == 1 else "hist-ok")
        bars.append(
            Bar(
                index * bar_width + 0.5,
                25 - height,
                bar_width - 1,
                height,
                css,
                f"{count} unit{'s' * (count != 1)} {label}",
            )
        )
    return Histogram(bars)


# ---- checkpoint comparison (--compare OLD) -----------------------------------------------------
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


def dead_change(source: str, data: Any) -> DeadChange | None:
    if not isinstance(data, dict):
        return None
    return DeadChange(
        source=source,
        old=_count(data.get("dead_old")),
        new=_count(data.get("dead_new")),
        fraction_old=number(data.get("dead_fraction_old")),
        fraction_new=number(data.get("dead_fraction_new")),
        newly_dead=_count(data.get("newly_dead")),
        revived=_count(data.get("revived")),
    )


def source_name(source: str | None) -> str:
    """probe, proof, static margins (what a source of dead counts is called on the page)."""
    return DEAD_SOURCE_TEXT[source][0] if source in DEAD_SOURCE_TEXT else (source or "none")


def dead_source_text(source: str | None, compare: dict[str, Any], bounds: dict[str, Any] | None) -> tuple[str, str]:
    """(source, how it counts a unit as dead and on what) for the comparison's main source."""
    if source is None:
        return "none", "no source could count dead units in both checkpoints (the notes say why)"
    name, how = source_name(source), DEAD_SOURCE_TEXT.get(source, ("", ""))[1]
    how = how.format(k=number(compare.get("margin_k")) or 0.0)
    probe = _object(compare.get("probe")) or {}
    if source == "probe" and probe.get("described"):
        how += f": {probe['described']}"
        old_samples = probe.get("old_samples")
        if old_samples is not None and old_samples != probe.get("samples"):
            how += f" ({old_samples} samples for OLD)"
    if source == "proof" and bounds and domain_text(bounds.get("domain")):
        how += f": {domain_text(bounds.get('domain'))}"
    return name, how


def compare_view(
    compare: dict[str, Any],
    order: dict[str, int],
    flagged_updates: set[str],
    options: tuple[float, float],
    bounds: dict[str, Any] | None = None,
) -> CompareView:
    """The comparison section of one model from its JSON ``compare`` object.

    ``order`` maps layer names to their number in the Layers table; ``flagged_updates`` names the layers
    RL702 reported; ``options`` is (RL702's max_update, RL703's k) as configured for the run.
    """
    max_update, bias_k = options
    raw_layers = _object(compare.get("layers")) or {}
    listed = [str(s) for s in compare.get("sources") or []] if isinstance(compare.get("sources"), list) else []
    present = [s for s in SOURCES if any(isinstance(v, dict) and s in v for v in raw_layers.values())]
    source = next((s for s in SOURCES if s in listed or s in present), None)
    names = sorted(raw_layers, key=lambda name: (order.get(name, len(order)), name))
    rows = []
    for position, name in enumerate(names):
        data = _object(raw_layers[name]) or {}
        changes = [c for c in (dead_change(s, data.get(s)) for s in SOURCES) if c is not None]
        main = next((c for c in changes if c.source == source), changes[0] if changes else None)
        update, shift = number(data.get("relative_update")), number(data.get("bias_shift_min"))
        rows.append(
            ChangeView(
                index=order.get(name, len(order) + position),
                name=name,
                units=_count(data.get("units")),
                relative_update=update,
                weight_norm_old=number(data.get("weight_norm_old")),
                weight_norm_new=number(data.get("weight_norm_new")),
                bias_shift_min=shift,
                bias_shift_mean=number(data.get("bias_shift_mean")),
                dead=main,
                others=tuple(c for c in changes if c is not main),
                update_flagged=name in flagged_updates or (update is not None and update > max_update),
                bias_flagged=shift is not None and shift < -bias_k,
            )
        )
    old = _object(compare.get("old")) or {}
    view = CompareView(
        old_path=str(old.get("path") or "?"),
        old_sha256=str(old.get("sha256") or ""),
        same_file=compare.get("same_file") is True,
        source=source,
        source_text=dead_source_text(source, compare, bounds),
        max_update=max_update,
        bias_k=bias_k,
        layers=rows,
        charts=[],
    )
    view.charts = [dead_change_chart(view), update_chart(view)]
    return view


def dead_change_chart(view: CompareView) -> Chart:
    chart = Chart(
        title="Dead units: OLD against NEW",
        description=(
            "Share of each layer's units counted dead in the older checkpoint (OLD) and in this one (NEW), "
            f"by the {source_name(view.source)}; the dashed line marks {DEAD_LINE:.0%}."
        ),
        legend=[
            ("bar-old", "OLD"),
            ("bar-ok", "NEW"),
            ("bar-bad", f"NEW over {DEAD_LINE:.0%}"),
            ("reference", f"{DEAD_LINE:.0%} line"),
        ],
    )
    if not view.layers:
        chart.empty = "No ReLU-family layers to compare."
        return chart
    if all(layer.dead is None for layer in view.layers):
        chart.empty = "Dead units could not be counted in both checkpoints (the notes say why)."
        return chart
    scale = _y_scale(chart, 1.0)
    band, _ = _columns(chart, len(view.layers))
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
                    css=css or ("bar-bad" if value >= DEAD_LINE else "bar-ok"),
                    title=title,
                )
            )
    _percent_axis(chart, scale)
    chart.x_labels = _layer_labels(chart, [layer.index for layer in view.layers])
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

    band, width = _columns(chart, len(view.layers))
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
    chart.x_labels = _layer_labels(chart, [layer.index for layer in view.layers])
    return chart


def log_range(positive: list[float], bound: float) -> tuple[int, int]:
    """(lowest, highest) power of ten of a log axis that shows ``positive`` values and the bound.

    The bound sits at least a decade under the top, so that its line never hides in the frame; the axis
    spans at least three decades and at most MAX_DECADES (smaller values are drawn on its floor).
    """
    anchors = positive + ([bound] if bound > 0 else [])
    high = math.ceil(math.log10(max(positive))) if positive else 0
    if bound > 0:
        high = max(high, math.floor(math.log10(bound)) + 1)
    low = math.floor(math.log10(min(anchors))) if anchors else high - 3
    low = max(min(low, high - 3), high - MAX_DECADES)
    return low, high


def _layer_labels(chart: Chart, indices: list[int]) -> list[Tick]:
    """The layers' numbers from the Layers table under the columns; every k-th one when there are many."""
    return [replace(tick, label=str(indices[int(tick.label) - 1] + 1)) for tick in _x_labels(chart, len(indices))]


def domain_text(domain: Any) -> str:
    """x ∈ [0, 1]; y ∈ 3 channel ranges (for one input, or several)."""
    if not isinstance(domain, dict):
        return ""
    parts = []
    for name, pairs in domain.items():
        if not isinstance(pairs, list) or not pairs:
            continue
        if len(pairs) == 1 and isinstance(pairs[0], list) and len(pairs[0]) == 2:
            parts.append(f"{name} ∈ {_range_text(pairs[0])}")
        else:
            parts.append(f"{name} ∈ {len(pairs)} channel ranges")
    return "; ".join(parts)


def domain_detail(domain: Any) -> str:
    """Every range of the domain, for the tooltip when channels have their own."""
    if not isinstance(domain, dict):
        return ""
    return "; ".join(
        f"{name}: " + ", ".join(_range_text(pair) for pair in pairs if isinstance(pair, list) and len(pair) == 2)
        for name, pairs in domain.items()
        if isinstance(pairs, list)
    )


def _range_text(pair: list[Any]) -> str:
    return f"[{_bound_text(number(pair[0]), pair[0])}, {_bound_text(number(pair[1]), pair[1])}]"


def _bound_text(value: float | None, raw: Any) -> str:
    return fmt_number(value, 4) if value is not None else str(raw)


# ---- the view of one model -------------------------------------------------------------------
@dataclass(frozen=True)
class RuleInfo:
    id: str
    name: str
    summary: str
    help_uri: str


def rule_info(rule_id: str) -> RuleInfo:
    rule = rule_by_id(rule_id)
    if rule is None:
        return RuleInfo(rule_id, "", "", f"{DOCS_BASE}{rule_id}.md")
    return RuleInfo(rule.id, rule.meta.name, rule.meta.summary, rule.meta.help_uri)


@dataclass
class FindingView:
    index: int
    severity: str
    rank: int  # 3 error .. 1 note, for sorting
    rule: RuleInfo
    node: str
    tensor: str
    message: str
    units: str
    units_sort: float
    fix: str
    evidence: list[tuple[str, str]]


@dataclass
class LayerView:
    index: int
    name: str
    activation_op: str
    linear: str
    linear_op: str
    norm_op: str
    units: int | None
    fan_in: int | None
    dead_fraction: float | None
    rarely_active_fraction: float | None
    sparsity: float | None  # share of zero outputs over every probed position (activation sparsity)
    at_risk_fraction: float | None
    weight_std: float | None
    he_std: float | None
    he_ratio: float | None
    bias_margin_min: float | None
    proven_dead: int | None  # units the bounds prove dead over --input-range (None: no proof ran)
    proven_dead_fraction: float | None
    always_active: int | None
    histogram: Histogram | None
    flagged: bool  # a finding names this layer's activation or linear node


@dataclass
class ModelView:
    anchor: str
    path: str
    error: str | None
    counts: dict[str, int]
    facts: list[tuple[str, str, str]]  # (label, shown value, tooltip)
    findings: list[FindingView]
    rules: list[RuleInfo]
    layers: list[LayerView]
    charts: list[Chart]
    notes: list[dict[str, Any]]
    probe: dict[str, Any] | None
    proofs: bool = False  # bounds over an input domain ran: the Layers table gets a "Proven dead" column
    compare: CompareView | None = None  # the section "Compared with OLD"

    @property
    def status(self) -> tuple[str, str]:
        """(css class, words) for the badge next to the model's name."""
        if self.error is not None:
            return "status-failed", "could not be analysed"
        for severity in ("error", "warning", "note"):
            if self.counts.get(severity):
                count = self.counts[severity]
                return f"status-{severity}", f"{count} {severity}{'s' * (count != 1)}"
        return "status-clean", "no findings"


def finding_view(index: int, data: dict[str, Any]) -> FindingView:
    severity = data["severity"]
    units = data.get("units") or {}
    count, total = units.get("count"), units.get("total")
    units_text = f"{count:,} / {total:,}" if isinstance(count, int) and isinstance(total, int) and total else "—"
    fraction = number(units.get("fraction"))
    evidence = [(str(k), _evidence_text(v)) for k, v in (data.get("evidence") or {}).items()]
    return FindingView(
        index=index,
        severity=severity,
        rank=int(Severity.parse(severity)),
        rule=rule_info(data["rule"]),
        node=data.get("node") or "",
        tensor=data.get("tensor") or "",
        message=data.get("message") or "",
        units=units_text,
        units_sort=fraction if fraction is not None else -1.0,
        fix=data.get("fix") or "",
        evidence=evidence,
    )


def _evidence_text(value: Any) -> str:
    if isinstance(value, float):
        return fmt_number(value, 4)
    if isinstance(value, list):
        shown = ", ".join(_evidence_text(v) for v in value[:8])
        return f"[{shown}{', …' if len(value) > 8 else ''}]"
    return str(value)


def layer_view(index: int, unit: dict[str, Any], probe_layers: dict[str, Any], flagged: set[str]) -> LayerView:
    metrics = unit.get("metrics") or {}
    name = str(unit.get("name", ""))
    probe = probe_layers.get(name) or {}
    dead_fraction = number(metrics.get("dead_fraction"))
    if dead_fraction is None and number(probe.get("units")):
        dead_fraction = (number(probe.get("dead")) or 0.0) / float(probe["units"])
    return LayerView(
        index=index,
        name=name,
        activation_op=str(unit.get("activation_op") or ""),
        linear=str(unit.get("linear") or ""),
        linear_op=str(unit.get("linear_op") or ""),
        norm_op=str(unit.get("norm_op") or ""),
        units=unit.get("units") if isinstance(unit.get("units"), int) else None,
        fan_in=unit.get("fan_in") if isinstance(unit.get("fan_in"), int) else None,
        dead_fraction=dead_fraction,
        rarely_active_fraction=number(metrics.get("rarely_active_fraction")),
        sparsity=number(probe.get("sparsity")),
        at_risk_fraction=number(metrics.get("at_risk_fraction")),
        weight_std=number(metrics.get("weight_std")),
        he_std=number(metrics.get("he_std")),
        he_ratio=number(metrics.get("he_ratio")),
        bias_margin_min=number(metrics.get("bias_margin_min")),
        proven_dead=_count(metrics.get("proven_dead")),
        proven_dead_fraction=number(metrics.get("proven_dead_fraction")),
        always_active=_count(metrics.get("always_active")),
        histogram=positive_rate_histogram(probe.get("positive_rate") or []),
        flagged=bool({name, unit.get("linear")} & flagged),
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def model_view(index: int, result: ModelResult, config: Config | None = None) -> ModelView:
    config = config or Config()
    data = result.to_json()
    findings = [finding_view(i, f) for i, f in enumerate(data["findings"])]
    probe = _object(data.get("probe"))
    probe_layers = probe.get("layers", {}) if probe else {}
    bounds = _object(data.get("bounds"))
    flagged = {f.node for f in findings if f.node}
    layers = [layer_view(i, u, probe_layers, flagged) for i, u in enumerate(data.get("units") or [])]
    rules = sorted({f.rule.id: f.rule for f in findings}.values(), key=lambda r: r.id)
    compare = None
    if _object(data.get("compare")) and result.error is None:
        options = (float(config.options_for("RL702")["max_update"]), float(config.options_for("RL703")["k"]))
        compare = compare_view(
            data["compare"],
            order={layer.name: layer.index for layer in layers},
            flagged_updates={f.node for f in findings if f.rule.id == "RL702" and f.node},
            options=options,
            bounds=bounds,
        )
    return ModelView(
        anchor=f"model-{index + 1}",
        path=result.path,
        error=result.error,
        counts=result.counts(),
        facts=model_facts(data, layers, probe, bounds),
        findings=findings,
        rules=rules,
        layers=layers,
        charts=[dead_fraction_chart(layers, probe is not None), he_chart(layers)] if result.error is None else [],
        notes=data.get("notes") or [],
        probe=probe,
        proofs=bounds is not None or any(layer.proven_dead is not None for layer in layers),
        compare=compare,
    )


def _object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def model_facts(
    data: dict[str, Any], layers: list[LayerView], probe: dict[str, Any] | None, bounds: dict[str, Any] | None = None
) -> list[tuple[str, str, str]]:
    if "error" in data:
        return []
    producer = data.get("producer") or {}
    producer_text = " ".join(str(p) for p in (producer.get("name"), producer.get("version")) if p) or "—"
    units = sum(layer.units or 0 for layer in layers)
    sha = str(data.get("sha256") or "")
    facts = [
        ("Opset", str(data.get("opset") if data.get("opset") is not None else "—"), ""),
        ("IR version", str(data.get("ir_version", "—")), ""),
        ("Producer", producer_text, ""),
        ("Parameters", f"{data['parameters']:,}" if isinstance(data.get("parameters"), int) else "—", ""),
        ("Nodes", f"{data['nodes']:,}" if isinstance(data.get("nodes"), int) else "—", ""),
        ("ReLU-family layers", f"{len(layers):,}", ""),
        ("Units", f"{units:,}", "units (channels or neurons) behind ReLU-family activations"),
        ("File size", fmt_bytes(data.get("file_size")), ""),
        ("SHA-256", sha[:12] + "…" if sha else "—", sha),
    ]
    if data.get("doc_string"):
        facts.append(("Description", str(data["doc_string"]), ""))
    for key, value in (data.get("metadata") or {}).items():
        facts.append((f"Metadata: {key}", str(value), ""))
    if probe:
        inputs = "real data" if probe.get("inputs") == "data" else "synthetic inputs"
        samples, batch = probe.get("samples", "?"), probe.get("batch", "?")
        facts.append(("Probe samples", str(samples), f"{samples} samples of {inputs}, batch {batch}"))
    else:
        facts.append(("Probe", "did not run", "static analysis only"))
    if bounds:
        facts.extend(bounds_facts(bounds))
    compare = _object(data.get("compare"))
    if compare:
        old = _object(compare.get("old")) or {}
        tip = f"the older checkpoint (SHA-256 {old.get('sha256') or '?'})"
        facts.append(("Compared with", str(old.get("path") or "?"), tip))
    return facts


def bounds_facts(bounds: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The input domain the proofs hold over, and how they were computed."""
    domain = domain_text(bounds.get("domain")) or "—"
    method = str(bounds.get("method") or "—")
    variables = _count(bounds.get("variables"))
    tip = f"bounds by {method}"
    if variables:
        tip += f", linear in {variables:,} input variables"
    unbounded = _object(bounds.get("unbounded_ops")) or {}
    if unbounded:
        listed = ", ".join(f"{op} ×{count}" for op, count in unbounded.items())
        tip += f"; left unbounded (sound, proves less): {listed}"
        method += f" · {sum(c for c in unbounded.values() if isinstance(c, int)):,} ops unbounded"
    return [("Input domain", domain, domain_detail(bounds.get("domain")) or domain), ("Bounds", method, tip)]


# ---- the page --------------------------------------------------------------------------------
@cache
def _asset(name: str) -> str:
    return resources.files("relulint.report").joinpath("templates", name).read_text(encoding="utf-8")


def csp_hash(inline: str) -> str:
    """The CSP source that allows exactly this inline script or style element, nothing else."""
    return "sha256-" + base64.b64encode(hashlib.sha256(inline.encode("utf-8")).digest()).decode("ascii")


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("relulint.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(show=show, code=show_code, number=fmt_number, percent=fmt_percent, r=_round, when=fmt_time)
    env.filters["source"] = source_name
    return env


def _round(value: float) -> str:
    """SVG coordinates: short and stable."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def totals(run: Run) -> dict[str, int]:
    counts = {str(s): 0 for s in SEVERITY_ORDER}
    for result in run.results:
        for key, value in result.counts().items():
            counts[key] += value
    return counts


def render(run: Run) -> str:
    script, css = _asset("report.js"), _asset("report.css")
    if re.search(r"</script", script, re.IGNORECASE) or re.search(r"</style", css, re.IGNORECASE):
        raise ValueError("report.js and report.css must not close their own element early")
    models = [model_view(i, result, run.config) for i, result in enumerate(run.results)]
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            models=models,
            totals=totals(run),
            summary=summary(run),
            failed=sum(1 for m in models if m.error is not None),
            version=__version__,
            information_uri=INFORMATION_URI,
            generated=run.finished or run.started,
            css=Markup(css),
            script=Markup(script),
            script_source=csp_hash(script),
            style_source=csp_hash(css),
            dead_line=DEAD_LINE,
        )
    )
