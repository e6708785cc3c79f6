"""The import path without the working folder (see ``relulint.launch``): for this process and its children.

Kept apart from the entry point so that the probe's runner, which the entry point starts, can build its
child's path without importing the entry point back.
"""

from __future__ import annotations

import os
import sys


def isolate() -> None:
    """Drop the working folder (``''``, ``.`` or its full path) from ``sys.path``; see ``relulint.launch``."""
    sys.path[:] = safe_path(sys.path)
    os.environ["PYTHONSAFEPATH"] = "1"


def safe_path(entries: list[str]) -> list[str]:
    """``entries`` without those that name the working folder."""
    try:
        here = os.path.realpath(os.getcwd())
    except OSError:  # the working folder was removed: only the relative entries can name it
        here = None
    kept = []
    for entry in entries:
        if entry in ("", "."):
            continue
        if here is not None and os.path.realpath(entry) == here:
            continue
        kept.append(entry)
    return kept
