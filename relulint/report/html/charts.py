"""The report's charts as coordinates: bars, ticks and reference lines the template draws as SVG.

Only geometry is computed here; every label is plain text that the template escapes. A chart of layers
takes anything shaped like ``LayerSeries`` (the views' LayerView), so the charts know nothing of the JSON.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from relulint.report.html.format import fmt_number, fmt_percent, number
from relulint.report.text import clean

# A measured zero still gets a sliver of a bar, so that it reads as "0", not as "not measured".
MIN_BAR = 1.5
# The relative-update chart spans at most this many decades: smaller updates sit on its floor.
MAX_DECADES = 6
# Layer names under the columns are cut to this many characters (the bar's tooltip has the whole name).
NAME_CHARS = 12


@dataclass(frozen=True)
class Thresholds:
    """The lines and bands the charts and tables draw, as the rules that judge them are configured."""

    dead_fraction: float  # RL501's error_fraction: a layer with more of its units dead is reported
    min_xavier: float  # RL101's min_ratio: weights below this multiple of Xavier's std are too small
    max_he: float  # RL101's max_ratio: weights above this multiple of He's std are too large

    def weight_off(self, std: float, he: float | None, xavier: float | None) -> bool:
        """Outside RL101's band (the band alone: RL101 also passes over trained and normalized layers)."""
        return bool((he and std > self.max_he * he) or (xavier and std < self.min_xavier * xavier))


class LayerSeries(Protocol):
    """What a chart of layers reads from each layer."""

    name: str
    dead_fraction: float | None
    weight_std: float | None
    he_std: float | None
    xavier_std: float | None


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
    title: str = ""  # the whole text, when the label is shortened


@dataclass
class Chart:
    title: str
    description: str
    width: int = 640
    height: int = 270
    bars: list[Bar] = field(default_factory=list)
    markers: list[Tick] = field(default_factory=list)  # short horizontal marks (e.g. He std)
    grid: list[Tick] = field(default_factory=list)  # y grid lines with their labels
    reference: Tick | None = None  # the dashed threshold line
    reference_outside: bool = False  # its label right of the plot (in a wider margin), clear of tall bars
    x_labels: list[Tick] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css class, text)
    empty: str = ""  # why there is nothing to draw

    left: int = 56  # the y labels, and the first slanted layer name
    right: int = 16
    top: int = 14
    bottom: int = 80  # room for the layer names, slanted under the columns

    @property
    def plot_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> float:
        return self.height - self.top - self.bottom

    @property
    def baseline(self) -> float:
        return self.top + self.plot_height


def columns(chart: Chart, count: int) -> tuple[float, float]:
    """(band width, bar width) for ``count`` columns across the plot."""
    band = chart.plot_width / max(count, 1)
    return band, max(min(band * 0.7, 36.0), 1.0)


def x_labels(chart: Chart, names: Sequence[str], numbers: Sequence[int] | None = None) -> list[Tick]:
    """The layers' names under the columns (shortened; every k-th one when there are many), each with
    its number in the Layers table and its whole name as the title. ``numbers`` default to 1, 2, .."""
    band, _ = columns(chart, len(names))
    step = max(1, math.ceil(len(names) / 32))  # slanted 11 px labels need about 14 px apart
    shown = short_names(names)
    return [
        Tick(
            chart.left + band * (i + 0.5),
            chart.baseline + 12,
            0,
            0,
            shown[i],
            f"{numbers[i] if numbers is not None else i + 1}. {clean(names[i])}",
        )
        for i in range(0, len(names), step)
    ]


def short_names(names: Sequence[str]) -> list[str]:
    """Names without the path all of them share, cut from the front to NAME_CHARS: the end of an exported
    name (``block_3/fc2/Relu``) tells layers apart, its beginning (``/model/encoder``) seldom does."""
    cleaned = [clean(name) for name in names]
    prefix = os.path.commonprefix(cleaned) if len(cleaned) > 1 else ""
    cut = max(prefix.rfind(separator) for separator in "/.:") + 1
    return [shorten(name[cut:] or name) for name in cleaned]


def shorten(name: str) -> str:
    return name if len(name) <= NAME_CHARS else "…" + name[-(NAME_CHARS - 1) :]


def y_scale(chart: Chart, top_value: float) -> Callable[[float], float]:
    return lambda value: chart.baseline - chart.plot_height * (value / top_value if top_value else 0.0)


def dead_fraction_chart(layers: Sequence[LayerSeries], probe_ran: bool, thresholds: Thresholds) -> Chart:
    line = thresholds.dead_fraction
    chart = Chart(
        title="Dead units per layer",
        description=(
            "Share of each layer's units that never switched on during the probe, in depth order; "
            f"the dashed line is RL501's error_fraction, {percent_text(line)}."
        ),
        legend=[
            ("bar-ok", "dead fraction"),
            ("bar-bad", f"over {percent_text(line)} (RL501)"),
            ("reference", f"{percent_text(line)} line"),
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
    scale = y_scale(chart, 1.0)
    band, width = columns(chart, len(layers))
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
                css="bar-bad" if value > line else "bar-ok",
                title=f"{index + 1}. {clean(layer.name)}: {fmt_percent(value)} dead",
            )
        )
    percent_axis(chart, scale, line)
    chart.x_labels = x_labels(chart, [layer.name for layer in layers])
    return chart


def percent_axis(chart: Chart, scale: Callable[[float], float], line: float) -> None:
    """Grid lines at 0, 25, .. 100% and the dashed line at ``line`` (RL501's threshold), for the dead-fraction
    charts; a threshold outside [0, 1] draws no line."""
    chart.grid = [
        Tick(chart.left, scale(v), chart.left + chart.plot_width, scale(v), f"{v:.0%}") for v in (0, 0.25, 0.5, 0.75, 1)
    ]
    if 0.0 <= line <= 1.0:
        y = scale(line)
        chart.reference = Tick(chart.left, y, chart.left + chart.plot_width, y, percent_text(line))


def percent_text(fraction: float) -> str:
    """40%, 12.5%: a threshold as the user wrote it, without rounding it away."""
    return f"{fraction * 100:.4g}%"


def he_chart(layers: Sequence[LayerSeries], thresholds: Thresholds) -> Chart:
    band_text = f"below {thresholds.min_xavier:g}× Xavier or above {thresholds.max_he:g}× He"
    chart = Chart(
        title="Weight std against He initialization",
        description=(
            "Standard deviation of each layer's weights (bars) and the He value sqrt(2 / fan-in) (marks); "
            f"bars outside RL101's band ({band_text}) are highlighted."
        ),
        legend=[("bar-ok", "weight std"), ("bar-warn", f"{band_text} (RL101)"), ("marker", "He std")],
    )
    pairs = [(layer.weight_std, layer.he_std) for layer in layers]
    if not layers:
        chart.empty = "No ReLU-family layers in this model."
        return chart
    values = [v for pair in pairs for v in pair if v is not None]
    if not values:
        chart.empty = "No layer has a weight matrix relulint could read."
        return chart
    step = nice_step(max(values) * 1.05 / 4)  # about four grid lines at round numbers
    steps = max(math.ceil(max(values) * 1.05 / step), 1)
    top_value = step * steps
    scale = y_scale(chart, top_value)
    band, width = columns(chart, len(layers))
    for index, (layer, (std, he)) in enumerate(zip(layers, pairs)):
        centre = chart.left + band * (index + 0.5)
        if std is not None:
            off = thresholds.weight_off(std, he, layer.xavier_std)
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
    chart.x_labels = x_labels(chart, [layer.name for layer in layers])
    return chart


def nice_step(value: float) -> float:
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


def positive_rate_histogram(rates: Sequence[object]) -> Histogram | None:
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
