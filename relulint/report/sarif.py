"""``--format sarif``: SARIF 2.1.0 for GitHub code scanning (``github/codeql-action/upload-sarif``).

Follows GitHub's code-scanning subset: every result has ruleId, ruleIndex, level, message
and one physical location (the model file, relative to the repository root, with
``region.startLine`` 1: GitHub rejects results without a region and cannot point into a
binary file), a logical location naming the node, and ``partialFingerprints`` that depend
only on the rule, the model path, the node and the tensor, so an alert keeps its identity
when a model is retrained and re-linted. GitHub's limits are enforced here, each cut
recorded as a tool execution notification.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from relulint import INFORMATION_URI, __version__
from relulint.findings import Finding, ModelResult, Note, Severity
from relulint.report import Run
from relulint.report.escape import json_text
from relulint.rules import RuleMeta, rule_by_id

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
FINGERPRINT_KEY = "relulintFinding/v1"

# GitHub code scanning limits (docs: "SARIF results exceed limit").
MAX_RESULTS_PER_RUN = 25_000
MAX_TAGS_PER_RULE = 20
MAX_DESCRIPTION_CHARS = 1024  # shortDescription.text and fullDescription.text
MAX_MESSAGE_CHARS = 8_000  # keeps one runaway message from bloating the upload

LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "note"}
NOTE_LEVELS = {"skipped": "warning", "checker": "warning", "info": "note"}


# ---- locations shared with the GitHub annotations --------------------------------------------
def repository_root(run: Run) -> Path:
    """The folder paths are relative to: as the command line found it (``--sarif-root`` or the git top
    level, see ``relulint.outputs``), else ``--sarif-root``, else the current folder."""
    if run.root is not None:
        return run.root
    return Path(run.config.sarif_root or Path.cwd()).resolve()


def relative_path(model_path: str, root: Path) -> str | None:
    """The model's path below ``root`` in POSIX form, or None when it lies outside."""
    try:
        return PurePosixPath(Path(model_path).resolve().relative_to(root)).as_posix()
    except ValueError:
        return None


def artifact_uri(model_path: str, root: Path) -> str:
    """The model's URI relative to the repository root (``%SRCROOT%``). The command line refuses a
    SARIF report for a model outside it (GitHub rejects absolute ``file://`` URIs); a renderer called
    directly on one gets its absolute URI. Names that are not UTF-8 keep their bytes (``%FF``)."""
    relative = relative_path(model_path, root)
    if relative is None:
        return "file://" + quote(os.fsencode(Path(model_path).resolve().as_posix()), safe="/")
    return quote(os.fsencode(relative), safe="/")


# ---- rules -----------------------------------------------------------------------------------
def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _first_paragraph(markdown: str) -> str:
    return markdown.strip().split("\n\n", 1)[0]


def rule_descriptor(rule_id: str) -> dict[str, Any]:
    rule = rule_by_id(rule_id)
    if rule is None:  # a finding from a rule this version does not know (e.g. a plugin removed)
        return {"id": rule_id, "shortDescription": {"text": rule_id}}
    return descriptor_from_meta(rule.meta)


def descriptor_from_meta(meta: RuleMeta) -> dict[str, Any]:
    help_markdown = f"## Why is this bad?\n\n{meta.why.strip()}\n\n## How to fix\n\n{meta.fix.strip()}\n"
    if meta.example:
        help_markdown += f"\n## Example\n\n{meta.example.strip()}\n"
    help_markdown += f"\n[Full documentation]({meta.help_uri})\n"
    tags = list(dict.fromkeys(["dying-relu", meta.family, *meta.tags]))[:MAX_TAGS_PER_RULE]
    return {
        "id": meta.id,
        "name": meta.name,
        "shortDescription": {"text": _clip(meta.summary, MAX_DESCRIPTION_CHARS)},
        "fullDescription": {"text": _clip(_first_paragraph(meta.why) or meta.summary, MAX_DESCRIPTION_CHARS)},
        "help": {"text": f"{meta.why.strip()}\n\nHow to fix: {meta.fix.strip()}", "markdown": help_markdown},
        "helpUri": meta.help_uri,
        "defaultConfiguration": {"level": LEVELS[meta.severity]},
        "properties": {"tags": tags, "family": meta.family, **({"needs": list(meta.needs)} if meta.needs else {})},
    }


# ---- results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Located:
    """A finding with the model it belongs to."""

    model: ModelResult
    uri: str
    finding: Finding


def fingerprint(rule: str, uri: str, node: str | None, tensor: str | None, occurrence: int) -> str:
    """Identity of a finding across runs: what and where, never the measured numbers."""
    key = "\0".join([rule, uri, node or "", tensor or "", str(occurrence)])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def artifact_location(uri: str) -> dict[str, Any]:
    """Relative URIs are relative to the repository root, which SARIF calls %SRCROOT%."""
    return {"uri": uri} if uri.startswith("file:") else {"uri": uri, "uriBaseId": "%SRCROOT%"}


def physical_location(uri: str) -> dict[str, Any]:
    return {"artifactLocation": artifact_location(uri), "region": {"startLine": 1}}


def logical_locations(finding: Finding) -> list[dict[str, Any]]:
    if finding.node:
        return [{"name": finding.node.rsplit("/", 1)[-1], "fullyQualifiedName": finding.node, "kind": "function"}]
    if finding.tensor:
        return [{"name": finding.tensor, "fullyQualifiedName": finding.tensor, "kind": "member"}]
    return []


def result_object(item: Located, rule_index: int, occurrence: int) -> dict[str, Any]:
    finding = item.finding
    where = f"{finding.node}: " if finding.node else ""
    location: dict[str, Any] = {"physicalLocation": physical_location(item.uri)}
    logical = logical_locations(finding)
    if logical:
        location["logicalLocations"] = logical
    digest = fingerprint(finding.rule, item.uri, finding.node, finding.tensor, occurrence)
    properties: dict[str, Any] = {"model": item.model.path}
    data = finding.to_json()
    for key in ("tensor", "units", "evidence", "fix"):
        if data.get(key):
            properties[key] = data[key]
    return {
        "ruleId": finding.rule,
        "ruleIndex": rule_index,
        "level": LEVELS[finding.severity],
        "message": {"text": _clip_message(where + finding.message)},
        "locations": [location],
        # primaryLocationLineHash is given too: upload-sarif would otherwise hash "line 1" of the
        # binary model, and the alert would change identity whenever the weights change.
        "partialFingerprints": {FINGERPRINT_KEY: digest, "primaryLocationLineHash": f"{digest[:16]}:1"},
        "properties": properties,
    }


def _clip_message(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def keep_within_limit(items: list[Located], limit: int) -> tuple[list[Located], int]:
    """At most ``limit`` findings, the most severe first kept, in their original order."""
    if len(items) <= limit:
        return items, 0
    ranked = sorted(range(len(items)), key=lambda i: (-items[i].finding.severity, i))
    kept = sorted(ranked[:limit])
    return [items[i] for i in kept], len(items) - limit


# ---- notifications ---------------------------------------------------------------------------
def notification(text: str, level: str, uri: str | None = None, node: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"message": {"text": text}, "level": level}
    if uri is not None:
        location: dict[str, Any] = {"physicalLocation": physical_location(uri)}
        if node:
            location["logicalLocations"] = [{"fullyQualifiedName": node, "kind": "function"}]
        item["locations"] = [location]
    return item


def model_notifications(model: ModelResult, uri: str) -> list[dict[str, Any]]:
    items = []
    if model.error is not None:
        items.append(notification(f"{model.path}: could not be analysed: {model.error}", "error", uri))
    for note in model.notes:
        items.append(_note_notification(model, note, uri))
    return items


def finding_notification(item: Located, rule_index: int) -> dict[str, Any]:
    """A model-wide note (``Finding.model_wide_note``) as a notification of the run: GitHub code scanning
    makes alerts of results only, and one of these on every model would stay open for good."""
    finding = item.finding
    text = _clip_message(f"{item.model.path}: {finding.rule}: {finding.message}")
    properties: dict[str, Any] = {"model": item.model.path}
    data = finding.to_json()
    for key in ("evidence", "fix"):
        if data.get(key):
            properties[key] = data[key]
    return notification(text, LEVELS[finding.severity], item.uri) | {
        "associatedRule": {"id": finding.rule, "index": rule_index},
        "properties": properties,
    }


def _note_notification(model: ModelResult, note: Note, uri: str) -> dict[str, Any]:
    where = f" {note.node}:" if note.node else ""
    text = f"{model.path}:{where} {note.kind}: {note.message}"
    return notification(text, NOTE_LEVELS.get(note.kind, "note"), uri, note.node)


# ---- the log ---------------------------------------------------------------------------------
def sarif_log(run: Run) -> dict[str, Any]:
    root = repository_root(run)
    uris = {id(model): artifact_uri(model.path, root) for model in run.results}
    located = [Located(m, uris[id(m)], f) for m in run.results for f in m.findings]
    model_wide = [item for item in located if item.finding.model_wide_note]
    located = [item for item in located if not item.finding.model_wide_note]
    located, left_out = keep_within_limit(located, MAX_RESULTS_PER_RUN)

    rule_ids = sorted({item.finding.rule for item in located + model_wide})
    rule_index = {rule_id: index for index, rule_id in enumerate(rule_ids)}
    seen: Counter[tuple[str, str, str, str]] = Counter()
    results = []
    for item in located:
        key = (item.finding.rule, item.uri, item.finding.node or "", item.finding.tensor or "")
        results.append(result_object(item, rule_index[item.finding.rule], seen[key]))
        seen[key] += 1

    notifications = [n for model in run.results for n in model_notifications(model, uris[id(model)])]
    notifications += [finding_notification(item, rule_index[item.finding.rule]) for item in model_wide]
    if left_out:
        notifications.append(
            notification(
                f"{left_out:,} findings were left out: GitHub code scanning accepts at most "
                f"{MAX_RESULTS_PER_RUN:,} results per run (the most severe were kept)",
                "warning",
            )
        )
    invocation: dict[str, Any] = {
        "executionSuccessful": all(model.error is None for model in run.results),
        "toolExecutionNotifications": notifications,
    }
    if run.command_line:
        invocation["commandLine"] = " ".join(run.command_line)
        invocation["arguments"] = list(run.command_line[1:])
    if run.started:
        invocation["startTimeUtc"] = run.started
    if run.finished:
        invocation["endTimeUtc"] = run.finished

    artifacts = [_artifact(model, uris[id(model)]) for model in run.results]
    return {
        "$schema": SCHEMA_URI,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "relulint",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": [rule_descriptor(rule_id) for rule_id in rule_ids],
                    }
                },
                "invocations": [invocation],
                "artifacts": artifacts,
                "results": results,
                "columnKind": "unicodeCodePoints",
            }
        ],
    }


def _artifact(model: ModelResult, uri: str) -> dict[str, Any]:
    artifact: dict[str, Any] = {"location": artifact_location(uri)}
    if model.sha256:
        artifact["hashes"] = {"sha-256": model.sha256}
    size = model.info.get("file_size")
    if isinstance(size, int):
        artifact["length"] = size
    return artifact


def render(run: Run) -> str:
    return json_text(json.dumps(sarif_log(run), indent=2, ensure_ascii=False, allow_nan=False)) + "\n"
