"""``--format text``: one line per finding, ``path: node [RLxxx] severity: message``, as ruff does.

``--output-format concise`` (the default) keeps a finding's line short: its message up to the first
``; `` (what was found; the rest is detail, such as the worst units or the synthetic-input caveat that
RL504 states once per model), clipped at ``CONCISE_CHARS``. ``full`` prints each message whole.
"""

from __future__ import annotations

from relulint.findings import ModelResult, Severity
from relulint.probe.result import ProbeResult
from relulint.report import Run
from relulint.report.escape import clean, shown_path

__all__ = ["clean", "model_lines", "render", "summary"]

CONCISE_CHARS = 160
COLORS = {Severity.ERROR: "31", Severity.WARNING: "33", Severity.NOTE: "36"}


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def headline(message: str) -> str:
    first = _first_clause(message)
    if len(first) <= CONCISE_CHARS:
        return first
    return first[: CONCISE_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _first_clause(message: str) -> str:
    """The message up to its first ``; `` outside parentheses (a parenthesis may list its own parts)."""
    depth = 0
    for index, char in enumerate(message):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        elif char == ";" and depth == 0 and message[index + 1 : index + 2] == " ":
            return message[:index]
    return message


def model_lines(result: ModelResult, run: Run) -> list[str]:
    color = run.color
    path = _paint(shown_path(result.path), "1", color)
    if result.error is not None:
        return []  # already said on stderr as one line; the summary counts it
    lines = []
    for finding in result.findings:
        where = f" {clean(finding.node)}" if finding.node else ""
        rule = _paint(f"[{finding.rule}]", COLORS[finding.severity] + ";1", color)
        severity = _paint(str(finding.severity), COLORS[finding.severity], color)
        message = finding.message if run.config.output_format == "full" else headline(finding.message)
        lines.append(f"{path}:{where} {rule} {severity}: {clean(message)}")
        if run.verbose > 0 and finding.fix:
            lines.append(f"  help: {clean(finding.fix)}")
    for note in result.notes:
        if run.verbose >= 0 or note.unfinished:  # a probe that did not finish is never hidden by -q
            where = f" {clean(note.node)}" if note.node else ""
            lines.append(f"{path}:{where} {_paint('note', '2', color)}: {clean(note.message)}")
    if run.verbose > 0:
        info = result.to_json()
        producer = info.get("producer") or {}
        lines.append(
            f"{path}: opset {info.get('opset')}, IR {info.get('ir_version')}, producer "
            f"{clean(producer.get('name') or '?')} {clean(producer.get('version') or '')}".rstrip()
            + f", {info.get('parameters', 0):,} parameters, {len(result.layers)} ReLU-family layers"
        )
        sparsity = sparsity_line(result.analyses.probe)
        if sparsity:
            lines.append(f"{path}: {sparsity}")
    return lines


def sparsity_line(probe: ProbeResult | None) -> str:
    """The probed layers' activation sparsity (share of zero outputs) in one line; "" when none was measured."""
    measured = probe.layers.values() if probe is not None else ()
    values = [layer.sparsity for layer in measured if layer.sparsity is not None]
    if not values:
        return ""
    spread = f"{min(values):.1%}" if len(values) == 1 else f"{min(values):.1%} to {max(values):.1%}"
    return (
        f"probe: activation sparsity (share of zero outputs) {spread} over {len(values)} layer(s), "
        f"mean {sum(values) / len(values):.1%}"
    )


def summary(run: Run) -> str:
    counts = {severity: 0 for severity in Severity}
    for result in run.results:
        for finding in result.findings:
            counts[finding.severity] += 1
    failed = sum(1 for result in run.results if result.error is not None)
    models = len(run.results)
    parts = [
        f"{counts[s]} {str(s)}{'' if counts[s] == 1 else 's'}" for s in sorted(Severity, reverse=True) if counts[s]
    ]
    text = f"Found {', '.join(parts)}" if parts else "No findings"
    text += f" in {models} model{'' if models == 1 else 's'}"
    if failed:
        text += f" ({failed} could not be analysed)"
    return text + "."


def render(run: Run) -> str:
    lines: list[str] = []
    for result in run.results:
        lines.extend(model_lines(result, run))
    if run.verbose >= 0 or lines:
        lines.append(summary(run))
    return "".join(line + "\n" for line in lines)  # -q on a clean run prints nothing at all
