"""The view of one model: its facts, findings and layers, for the page (the unit view and findings from the
result's JSON form, the probe's, bounds' and comparison's numbers from their typed results)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relulint.bounds.result import BoundsResult
from relulint.compare_result import CompareResult
from relulint.config import Config
from relulint.findings import ModelResult, Severity
from relulint.probe.result import LayerMeasure, ProbeResult
from relulint.report.html.charts import (
    Chart,
    Histogram,
    Thresholds,
    dead_fraction_chart,
    he_chart,
    positive_rate_histogram,
)
from relulint.report.html.comparison import CompareView, compare_view
from relulint.report.html.format import (
    as_int,
    domain_detail,
    domain_text,
    fmt_bytes,
    fmt_number,
    number,
)
from relulint.rules import DOCS_BASE, rule_by_id


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
    xavier_std: float | None
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
    probe: ProbeResult | None
    thresholds: Thresholds
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


def layer_view(index: int, unit: dict[str, Any], probe_layers: dict[str, LayerMeasure], flagged: set[str]) -> LayerView:
    metrics = unit.get("metrics") or {}
    name = str(unit.get("name", ""))
    probe = probe_layers.get(name)
    dead_fraction = number(metrics.get("dead_fraction"))
    if dead_fraction is None and probe is not None and probe.units:
        dead_fraction = probe.dead / probe.units
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
        sparsity=number(probe.sparsity) if probe is not None else None,
        at_risk_fraction=number(metrics.get("at_risk_fraction")),
        weight_std=number(metrics.get("weight_std")),
        he_std=number(metrics.get("he_std")),
        xavier_std=number(metrics.get("xavier_std")),
        he_ratio=number(metrics.get("he_ratio")),
        bias_margin_min=number(metrics.get("bias_margin_min")),
        proven_dead=as_int(metrics.get("proven_dead")),
        proven_dead_fraction=number(metrics.get("proven_dead_fraction")),
        always_active=as_int(metrics.get("always_active")),
        histogram=positive_rate_histogram([float(rate) for rate in probe.positive_rate]) if probe is not None else None,
        flagged=bool({name, unit.get("linear")} & flagged),
    )


def model_view(index: int, result: ModelResult, config: Config | None = None) -> ModelView:
    config = config or Config()
    data = result.to_json()
    findings = [finding_view(i, f) for i, f in enumerate(data["findings"])]
    probe, bounds, compared = result.analyses.probe, result.analyses.bounds, result.analyses.compare
    probe_layers = probe.layers if probe is not None else {}
    flagged = {f.node for f in findings if f.node}
    layers = [layer_view(i, u, probe_layers, flagged) for i, u in enumerate(data.get("units") or [])]
    rules = sorted({f.rule.id: f.rule for f in findings}.values(), key=lambda r: r.id)
    thresholds = rule_thresholds(config)
    compare = None
    if compared is not None and result.error is None:
        options = (
            float(config.options_for("RL702")["max_update"]),
            float(config.options_for("RL703")["k"]),
            thresholds.dead_fraction,
        )
        compare = compare_view(
            compared,
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
        facts=model_facts(data, layers, probe, bounds, compared),
        findings=findings,
        rules=rules,
        layers=layers,
        charts=[dead_fraction_chart(layers, probe is not None, thresholds), he_chart(layers, thresholds)]
        if result.error is None
        else [],
        notes=data.get("notes") or [],
        probe=probe,
        thresholds=thresholds,
        proofs=bounds is not None or any(layer.proven_dead is not None for layer in layers),
        compare=compare,
    )


def rule_thresholds(config: Config) -> Thresholds:
    """The page's lines and bands from the rules' effective options (their defaults, or the configuration's)."""
    dead, weights = config.options_for("RL501"), config.options_for("RL101")
    return Thresholds(
        dead_fraction=float(dead["error_fraction"]),
        min_xavier=float(weights["min_ratio"]),
        max_he=float(weights["max_ratio"]),
    )


def model_facts(
    data: dict[str, Any],
    layers: list[LayerView],
    probe: ProbeResult | None,
    bounds: BoundsResult | None = None,
    compare: CompareResult | None = None,
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
    if probe is not None:
        inputs = "real data" if probe.inputs == "data" else "synthetic inputs"
        samples, batch = probe.samples, probe.batch
        facts.append(("Probe samples", str(samples), f"{samples} samples of {inputs}, batch {batch}"))
        facts.append(EVIDENCE_FACTS["data" if probe.inputs == "data" else "synthetic"])
    else:
        facts.append(("Probe", "did not run", "static analysis only"))
    if bounds is not None:
        facts.extend(bounds_facts(bounds))
    if compare is not None:
        tip = f"the older checkpoint (SHA-256 {compare.old_sha256 or '?'})"
        facts.append(("Compared with", compare.old_path or "?", tip))
    return facts


# What each evidence level lets a probe finding claim (RL501-RL503's policy), shown beside the probe's samples.
EVIDENCE_LEVELS = (
    "Evidence levels: proven (RL601's bounds over --input-range: dead for every input of the domain); data (real "
    "samples: an error once the 95% bound on a dead unit's firing rate is under the rule's max_firing_rate); "
    "synthetic (a suspicion: a warning at most; pass real samples with --data to confirm)"
)
EVIDENCE_FACTS = {
    "data": ("Evidence", "real data (errors when enough samples)", EVIDENCE_LEVELS),
    "synthetic": ("Evidence", "synthetic inputs (a suspicion: warnings at most)", EVIDENCE_LEVELS),
}


def bounds_facts(bounds: BoundsResult) -> list[tuple[str, str, str]]:
    """The input domain the proofs hold over, and how they were computed."""
    domain = domain_text(bounds.domain) or "—"
    method = bounds.method
    tip = f"bounds by {method}"
    if bounds.variables:
        tip += f", linear in {bounds.variables:,} input variables"
    unbounded = dict(sorted(bounds.unbounded_ops.items()))
    if unbounded:
        listed = ", ".join(f"{op} ×{count}" for op, count in unbounded.items())
        tip += f"; left unbounded (sound, proves less): {listed}"
        method += f" · {sum(unbounded.values()):,} ops unbounded"
    return [("Input domain", domain, domain_detail(bounds.domain) or domain), ("Bounds", method, tip)]
