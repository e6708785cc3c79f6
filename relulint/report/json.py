"""``--format json``: the JSON contract documented in README.md."""

from __future__ import annotations

import json
from typing import Any

from relulint import __version__
from relulint.report import Run
from relulint.report.escape import json_text
from relulint.rules import rule_by_id

SCHEMA_VERSION = 1


def document(run: Run) -> dict[str, Any]:
    used = sorted({f.rule for result in run.results for f in result.findings})
    return {
        "version": SCHEMA_VERSION,
        "tool": {"name": "relulint", "version": __version__},
        "started": run.started,
        "finished": run.finished,
        "rules": {rule_id: _rule_summary(rule_id) for rule_id in used},
        "models": [result.to_json() for result in run.results],
    }


def _rule_summary(rule_id: str) -> dict[str, Any]:
    rule = rule_by_id(rule_id)
    if rule is None:
        return {}
    return {"name": rule.meta.name, "summary": rule.meta.summary, "help_uri": rule.meta.help_uri}


def render(run: Run) -> str:
    return json_text(dumps(document(run))) + "\n"


def dumps(value: Any) -> str:
    """JSON laid out by structure: the outer levels one member per line, each record on one line.

    Containers of containers are opened up (one member per line, two-space indent) down to the
    records a reader scans: a unit, a finding, a note, one layer of the probe. Each record, and every
    container of plain values, is written on one line by json's C encoder. Python's per-element
    encoder (the only one with ``indent``) took 0.2 s on the ResNet-50 bench model and 0.7 s on the
    20,000-node one; writing every value separately, 1.2 s on the latter.
    """
    parts: list[str] = []
    _write(value, "", 0, parts)
    return "".join(parts)


CONTAINERS = (dict, list, tuple)  # what _jsonable leaves in a document besides plain values
OPEN_BELOW_DEPTH = 4  # containers of containers shallower than this are opened up...
RECORDS_BELOW_DEPTH = 6  # ...and, down to this depth, containers whose members are all records


def _plain(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def _opened(value: Any, depth: int) -> bool:
    members = value.values() if isinstance(value, dict) else value
    if not isinstance(value, CONTAINERS) or not value or depth >= RECORDS_BELOW_DEPTH:
        return False
    if depth < OPEN_BELOW_DEPTH:
        return any(isinstance(member, CONTAINERS) for member in members)
    return all(isinstance(member, dict) for member in members)  # a collection of records


def _write(value: Any, indent: str, depth: int, parts: list[str]) -> None:
    if not _opened(value, depth):
        parts.append(_plain(value))
        return
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{_plain(str(key))}: " for key in value]
        members = list(value.values())
        opening, closing = "{\n", "}"
    else:
        items = [inner] * len(value)
        members = list(value)
        opening, closing = "[\n", "]"
    parts.append(opening)
    last = len(members) - 1
    for index, (head, member) in enumerate(zip(items, members)):
        parts.append(head)
        _write(member, inner, depth + 1, parts)
        parts.append(",\n" if index < last else "\n")
    parts.append(indent + closing)
