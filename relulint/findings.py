"""Findings, notes and per-model results: the data every reporter renders.

The field names of ``to_json`` are the JSON contract documented in README.md;
the SARIF, GitHub and HTML reporters and users' scripts build on them.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from relulint.analyses import Analyses


class Severity(enum.IntEnum):
    """Ordered so that ``severity >= fail_on`` decides the exit status."""

    NOTE = 1
    WARNING = 2
    ERROR = 3

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (expected error, warning or note)") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class AffectedUnits:
    """Which units of a layer a finding is about."""

    count: int
    total: int
    worst: tuple[int, ...] = ()  # a few unit (channel) indices, worst first

    @property
    def fraction(self) -> float:
        return self.count / self.total if self.total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total": self.total,
            "fraction": round(self.fraction, 6),
            "worst": list(self.worst),
        }


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    message: str
    node: str | None = None  # node path, e.g. "If_0/then/Conv_3"
    tensor: str | None = None
    units: AffectedUnits | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str = ""

    @property
    def model_wide_note(self) -> bool:
        """A note about the whole run of a model (RL504's synthetic inputs, RL503's summary at note level),
        not about a place in it: it never fails a run (with --fail-on note every run without --data would
        fail) and SARIF gives it as a run-level notification, not an alert that stays open on every model."""
        return self.severity == Severity.NOTE and self.node is None

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": str(self.severity),
            "node": self.node,
            "tensor": self.tensor,
            "message": self.message,
            "units": self.units.to_json() if self.units else None,
            "evidence": _jsonable(self.evidence),
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Note:
    """Something the run could not do or wants the reader to know.

    ``kind`` is one of: "checker" (onnx checker complaint), "skipped" (an
    analysis or part of one did not run), "info".
    """

    kind: str
    message: str
    node: str | None = None
    unfinished: bool = False  # the probe started but did not finish (timeout, memory cap, crash)

    def to_json(self) -> dict[str, Any]:
        data = {"kind": self.kind, "message": self.message, "node": self.node}
        return {**data, "unfinished": True} if self.unfinished else data


@dataclass
class ModelResult:
    """Everything known about one model after analysis (or its load error)."""

    path: str
    sha256: str | None = None
    error: str | None = None  # set when the model could not be analysed at all
    internal: bool = False  # the error is relulint's own defect (exit status 3), not the model's
    info: dict[str, Any] = field(default_factory=dict)  # opset, ir_version, producer, parameters
    layers: list[dict[str, Any]] = field(default_factory=list)  # the unit view with per-layer metrics
    findings: list[Finding] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    analyses: Analyses = field(default_factory=Analyses)  # the probe's, bounds' and comparison's results

    def counts(self) -> dict[str, int]:
        counts = {str(s): 0 for s in sorted(Severity, reverse=True)}
        for finding in self.findings:
            counts[str(finding.severity)] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "sha256": self.sha256}
        if self.error is not None:
            data["error"] = self.error
        if self.internal:
            data["internal_error"] = True
        data.update(_jsonable(self.info))
        data["units"] = _jsonable(self.layers)
        data["findings"] = [f.to_json() for f in self.findings]
        data["notes"] = [n.to_json() for n in self.notes]
        data["summary"] = self.counts()
        data.update(_jsonable(self.analyses.to_json()))
        return data


PLAIN_TYPES = (str, int, bool, type(None))  # written as they are (checked first: most values are)


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays and tuples into plain JSON values; NaN/Inf become strings."""
    if type(value) in PLAIN_TYPES:
        return value
    if type(value) is float:
        return json_number(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _array(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return json_number(float(value))
    return value


def json_number(number: float) -> float | str:
    """A float as the JSON report writes it: to 6 decimals (6 significant digits when tiny), NaN and
    infinities as strings."""
    magnitude = abs(number)
    if 1e-4 <= magnitude < math.inf or number == 0:  # the common case first
        return round(number, 6)
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return float(f"{number:.6g}")  # six significant digits, not six decimals


SMALL_ARRAY = 64  # below this many values the vectorized path costs more than it saves


def _array(array: Any) -> Any:
    """An array as a list, numbers written as ``json_number`` writes them, vectorized: the probe's
    per-unit arrays are tens of thousands of values (a call per element took 0.1 s on ResNet-50)."""
    if array.ndim == 0:
        return _jsonable(array.item())
    if array.ndim > 1:
        return [_array(row) for row in array]
    kind = array.dtype.kind
    if kind in "biu":
        return array.tolist()
    if kind != "f":
        return [_jsonable(v) for v in array.tolist()]
    if array.size <= SMALL_ARRAY:
        return [json_number(v) for v in array.tolist()]
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        return [json_number(v) for v in values.tolist()]
    listed = np.round(values, 6).tolist()
    for index in np.flatnonzero((values != 0) & (np.abs(values) < 1e-4)).tolist():
        listed[index] = float(f"{values[index]:.6g}")  # six significant digits, not six decimals
    return listed
