"""``--format json``: the JSON contract documented in README.md."""

from __future__ import annotations

import json
from typing import Any

from relulint import __version__
from relulint.report import Run
from relulint.rules import rule_by_id

SCHEMA_VERSION = 1


def document(run: Run) -> dict:
    used = sorted({f.rule for result in run.results for f in result.findings})
    return {
        "version": SCHEMA_VERSION,
        "tool": {"name": "relulint", "version": __version__},
        "started": run.started,
        "finished": run.finished,
        "rules": {rule_id: _rule_summary(rule_id) for rule_id in used},
        "models": [result.to_json() for result in run.results],
    }


def _rule_summary(rule_id: str) -> dict:
    rule = rule_by_id(rule_id)
    if rule is None:
        return {}
    return {"name": rule.meta.name, "summary": rule.meta.summary, "help_uri": rule.meta.help_uri}


def render(run: Run) -> str:
    return dumps(document(run)) + "\n"


def dumps(value: Any) -> str:
    """JSON indented by two spaces, with every list of plain values on one line.

    The probe's per-unit arrays hold tens of thousands of numbers: one per line made the
    document long to read and slow to write (json's C encoder only runs without ``indent``;
    the per-element Python encoder took 0.2 s on the ResNet-50 bench model). Here each
    one-line list and each plain value is written by the C encoder.
    """
    parts: list[str] = []
    _write(value, "", parts)
    return "".join(parts)


CONTAINERS = {dict, list, tuple}  # what _jsonable leaves in a document besides plain values


def _plain(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def _write(value: Any, indent: str, parts: list[str]) -> None:
    inner = indent + "  "
    if isinstance(value, dict) and value:
        parts.append("{\n")
        last = len(value) - 1
        for index, (key, item) in enumerate(value.items()):
            parts.append(f"{inner}{_plain(str(key))}: ")
            _write(item, inner, parts)
            parts.append(",\n" if index < last else "\n")
        parts.append(indent + "}")
    elif isinstance(value, (list, tuple)) and not CONTAINERS.isdisjoint(map(type, value)):
        parts.append("[\n")
        last = len(value) - 1
        for index, item in enumerate(value):
            parts.append(inner)
            _write(item, inner, parts)
            parts.append(",\n" if index < last else "\n")
        parts.append(indent + "]")
    else:  # a plain value, an empty container or a list of plain values
        parts.append(_plain(value))
