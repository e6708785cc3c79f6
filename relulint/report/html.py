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
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from relulint import INFORMATION_URI, __version__
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
        legend=[("bar-ok", "dead fraction"), ("bar-bad", f"over {DEAD_LINE:.0%}"), ("reference", f"{DEAD_LINE:.0%} line")],
    )
    measured = [layer.dead_fraction for layer in layers]
    if not layers:
        chart.empty = "No ReLU-family layers in this model."
        return chart
    if all(value is None for value in measured):
        chart.empty = "The probe did not run on this model (it is off with --no-probe; otherwise the notes say why)." if not probe_ran else "The probe measured no layer."
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
    chart.grid = [Tick(chart.left, scale(v), chart.left + chart.plot_width, scale(v), f"{v:.0%}") for v in (0, 0.25, 0.5, 0.75, 1)]
    y = scale(DEAD_LINE)
    chart.reference = Tick(chart.left, y, chart.left + chart.plot_width, y, f"{DEAD_LINE:.0%}")
    chart.x_labels = _x_labels(chart, len(layers))
    return chart


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
            chart.bars.append(Bar(centre - width / 2, y, width, chart.baseline - y, "bar-warn" if off else "bar-ok", title))
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
        bars.append(Bar(index * bar_width + 0.5, 25 - height, bar_width - 1, height, css, f"{count} unit{'s' * (count != 1)} {label}"))
    return Histogram(bars)


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
    at_risk_fraction: float | None
    weight_std: float | None
    he_std: float | None
    he_ratio: float | None
    bias_margin_min: float | None
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
        at_risk_fraction=number(metrics.get("at_risk_fraction")),
        weight_std=number(metrics.get("weight_std")),
        he_std=number(metrics.get("he_std")),
        he_ratio=number(metrics.get("he_ratio")),
        bias_margin_min=number(metrics.get("bias_margin_min")),
        histogram=positive_rate_histogram(probe.get("positive_rate") or []),
        flagged=bool({name, unit.get("linear")} & flagged),
    )


def model_view(index: int, result: ModelResult) -> ModelView:
    data = result.to_json()
    findings = [finding_view(i, f) for i, f in enumerate(data["findings"])]
    probe = data.get("probe") if isinstance(data.get("probe"), dict) else None
    probe_layers = probe.get("layers", {}) if probe else {}
    flagged = {f.node for f in findings if f.node}
    layers = [layer_view(i, u, probe_layers, flagged) for i, u in enumerate(data.get("units") or [])]
    rules = sorted({f.rule.id: f.rule for f in findings}.values(), key=lambda r: r.id)
    return ModelView(
        anchor=f"model-{index + 1}",
        path=result.path,
        error=result.error,
        counts=result.counts(),
        facts=model_facts(data, layers, probe),
        findings=findings,
        rules=rules,
        layers=layers,
        charts=[dead_fraction_chart(layers, probe is not None), he_chart(layers)] if result.error is None else [],
        notes=data.get("notes") or [],
        probe=probe,
    )


def model_facts(data: dict[str, Any], layers: list[LayerView], probe: dict[str, Any] | None) -> list[tuple[str, str, str]]:
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
    return facts


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
    models = [model_view(i, result) for i, result in enumerate(run.results)]
    return environment().get_template("report.html.j2").render(
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
