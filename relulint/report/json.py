"""``--format json``: the JSON contract documented in README.md."""

from __future__ import annotations

import json

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
    return json.dumps(document(run), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
