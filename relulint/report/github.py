"""``--format github``: GitHub Actions workflow commands that become annotations on the pull request.

Prints one ``::error|warning|notice file=…,line=1,title=RLxxx name::message`` line per finding,
escaped as GitHub's runner expects (``%``, CR and LF in the message; also ``:`` and ``,`` in
properties).

GitHub shows at most 10 error and 10 warning annotations per step, so ``step_summary`` makes a
Markdown table of *all* findings, which the command line appends to the file that
``GITHUB_STEP_SUMMARY`` names (inside GitHub Actions) and GitHub shows on the run's summary page.
Every name in it is escaped for Markdown (``relulint.report.escape.markdown_text``).
"""

from __future__ import annotations

from pathlib import Path

from relulint.findings import Finding, ModelResult, Severity
from relulint.report import Run
from relulint.report.escape import clean, markdown_text
from relulint.report.sarif import relative_path, repository_root
from relulint.report.text import summary
from relulint.rules import rule_by_id

COMMANDS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "notice"}
# GitHub caps a step summary at 1 MiB; stay well below it and say how many rows were left out.
SUMMARY_BUDGET = 900 * 1024


def escape_data(text: str) -> str:
    """The message part of a workflow command."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A ``key=value`` property of a workflow command."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, **properties: str | int) -> str:
    props = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items())
    return f"::{kind} {props}::{escape_data(message)}" if props else f"::{kind}::{escape_data(message)}"


def display_path(model_path: str, root: Path) -> str:
    """Annotations attach to files by their path relative to the repository root."""
    return clean(relative_path(model_path, root) or model_path)


def rule_title(rule_id: str) -> str:
    rule = rule_by_id(rule_id)
    return f"{rule_id} {rule.meta.name}" if rule else rule_id


def clean_lines(text: str) -> str:
    """Control characters shown escaped, as ``clean`` does, except line breaks: GitHub shows them."""
    return "\n".join(clean(line) for line in text.split("\n"))


def finding_message(finding: Finding) -> str:
    """Node names may hold control characters (shown escaped); a message may span lines."""
    where = f"{clean(finding.node)}: " if finding.node else ""
    return where + clean_lines(finding.message)


def model_commands(result: ModelResult, path: str) -> list[str]:
    if result.error is not None:
        return [command("error", f"could not be analysed: {clean(result.error)}", file=path, line=1, title="relulint")]
    lines = [
        command(COMMANDS[f.severity], finding_message(f), file=path, line=1, title=rule_title(f.rule))
        for f in result.findings
    ]
    for note in result.notes:
        if note.kind == "skipped":
            where = f"{clean(note.node)}: " if note.node else ""
            lines.append(command("notice", where + clean(note.message), file=path, line=1, title="relulint: skipped"))
    return lines


# ---- the step summary ------------------------------------------------------------------------
def markdown_cell(text: str) -> str:
    return markdown_text(text)


def step_summary(run: Run, root: Path) -> str:
    lines = ["## relulint", "", summary(run), ""]
    rows = []
    for result in run.results:
        path = markdown_cell(display_path(result.path, root))
        if result.error is not None:
            rows.append(f"| error | — | {path} | — | could not be analysed: {markdown_cell(result.error)} |")
        for finding in result.findings:
            rule = rule_by_id(finding.rule)
            rule_cell = f"[{finding.rule}]({rule.meta.help_uri}) {rule.meta.name}" if rule else finding.rule
            node = markdown_cell(finding.node or "—")
            rows.append(f"| {finding.severity} | {rule_cell} | {path} | {node} | {markdown_cell(finding.message)} |")
    if rows:
        lines += ["| severity | rule | model | node | message |", "| --- | --- | --- | --- | --- |"]
        size = sum(len(line) + 1 for line in lines)
        for index, row in enumerate(rows):
            if size + len(row) + 1 > SUMMARY_BUDGET:
                lines += ["", f"{len(rows) - index:,} more rows left out (GitHub limits a step summary to 1 MiB)."]
                break
            lines.append(row)
            size += len(row) + 1
    return "\n".join(lines) + "\n\n"


def render(run: Run) -> str:
    root = repository_root(run)
    lines = [line for result in run.results for line in model_commands(result, display_path(result.path, root))]
    lines.append(summary(run))
    return "\n".join(lines) + "\n"
