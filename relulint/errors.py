"""Errors that end the analysis of one model, or of the whole run."""

from __future__ import annotations


class ModelError(Exception):
    """A model that cannot be analysed: printed as one line ``path: problem``."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class UsageError(Exception):
    """A bad option or configuration value: exit status 2, no model analysed."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's text on one line, at most ``limit`` characters: for ``path: problem`` messages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
