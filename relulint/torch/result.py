"""``Report``: what ``check`` and ``DeadUnitMonitor.report`` return, printed and written as the CLI does.

It holds one ``relulint.report.Run`` and renders it with the CLI's renderers. SARIF alone is adjusted
afterwards: a finding whose evidence names a Python source line points there (``physicalLocation`` of the
``.py`` file), so GitHub code scanning annotates the model's code rather than a file that does not exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from relulint.findings import Finding, ModelResult, Severity
from relulint.report import FORMATS, Run, format_for_path, render, write_atomically


@dataclass
class Report:
    run: Run
    fallback_source: tuple[str, int] | None = None  # the root module's class: where findings without a line point

    @property
    def result(self) -> ModelResult:
        return self.run.results[0]

    @property
    def findings(self) -> list[Finding]:
        return [finding for result in self.run.results for finding in result.findings]

    def failed(self, fail_on: Severity | str = Severity.ERROR) -> bool:
        """True when a finding is at or above ``fail_on`` (what makes the CLI exit 1)."""
        level = fail_on if isinstance(fail_on, Severity) else Severity.parse(fail_on)
        return any(finding.severity >= level for finding in self.findings)

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON document (``relulint --format json``) as a dict."""
        return json.loads(self.render("json"))

    def render(self, format_name: str = "text", *, verbose: bool = False, color: bool = False) -> str:
        if format_name not in FORMATS:
            raise ValueError(f"unknown format {format_name!r} (choose from {', '.join(FORMATS)})")
        run = replace(self.run, verbose=1 if verbose else 0, color=color)
        text = render(format_name, run)
        if format_name == "sarif":
            from relulint.report.sarif import repository_root

            log = point_at_source(json.loads(text), repository_root(run), self.fallback_source)
            text = json.dumps(log, indent=2, ensure_ascii=False) + "\n"
        return text

    def write(self, path: str | Path, format_name: str | None = None) -> Path:
        """Write the report; its format follows the extension (.txt .json .sarif .html) unless given."""
        destination = Path(path)
        chosen = format_name or format_for_path(str(destination))
        if chosen is None:
            raise ValueError(f"cannot tell the format of '{destination}' from its name; give format_name")
        write_atomically(destination, self.render(chosen))
        return destination

    def __str__(self) -> str:
        return self.render("text")


def point_at_source(log: dict[str, Any], root: Path, fallback: tuple[str, int] | None) -> dict[str, Any]:
    """Move each SARIF result's physical location to the Python line its evidence names; so too the run's
    notifications (model-wide notes), which would otherwise name the module as if it were a file."""
    from relulint.report.sarif import artifact_location, relative_path

    artifacts: dict[str, dict[str, Any]] = {}
    for sarif_run in log["runs"]:
        notifications = [
            note
            for invocation in sarif_run.get("invocations", [])
            for note in invocation.get("toolExecutionNotifications", [])
            if note.get("locations")
        ]
        for result in sarif_run["results"] + notifications:
            source = result.get("properties", {}).get("evidence", {}).get("source")
            site = (source["file"], source["line"]) if source else fallback
            if site is None:
                continue
            relative = relative_path(site[0], root)
            uri = relative if relative is not None else Path(site[0]).resolve().as_uri()
            location = artifact_location(uri)
            result["locations"][0]["physicalLocation"] = {
                "artifactLocation": location,
                "region": {"startLine": site[1]},
            }
            artifacts[uri] = {"location": location}
        if artifacts:
            sarif_run["artifacts"] = list(artifacts.values())
    return log
