"""Renderers: one module per output format, each with ``render(run: Run) -> str``."""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from relulint.config import Config
from relulint.findings import ModelResult

FORMATS = ("text", "json", "sarif", "github", "html")
# The formats that show each model file's SHA-256 (the text and GitHub reports do not: without them it is not computed).
SHOW_SHA256 = frozenset({"json", "sarif", "html"})
# Output file extensions that imply a format when --format is not given for that output.
EXTENSIONS = {".txt": "text", ".json": "json", ".sarif": "sarif", ".html": "html", ".htm": "html"}


@dataclass
class Run:
    """One invocation: every model's result plus what the renderers need to describe the run."""

    results: list[ModelResult]
    config: Config
    started: str = ""  # ISO 8601 UTC
    finished: str = ""
    command_line: list[str] = field(default_factory=list)
    color: bool = False
    verbose: int = 0  # -1 quiet, 0 normal, 1 verbose
    root: Path | None = None  # the folder SARIF and GitHub paths are relative to (found by the CLI)


class FormatUnavailable(Exception):
    pass


def render(format_name: str, run: Run) -> str:
    if format_name not in FORMATS:
        raise FormatUnavailable(f"unknown format '{format_name}' (choose from {', '.join(FORMATS)})")
    try:
        module = importlib.import_module(f"{__name__}.{format_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{format_name}":
            raise
        raise FormatUnavailable(f"the {format_name} format is not available in this version of relulint") from None
    return module.render(run)


def format_for_path(path: str) -> str | None:
    name = path.lower()
    if name.endswith(".sarif.json"):
        return "sarif"
    return EXTENSIONS.get(Path(name).suffix)


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename it: no half-written report."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); a report gets the permissions a new file normally has.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
