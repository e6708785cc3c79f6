"""The static phase's watchdog (``--timeout``): one model's loading and analyses get a budget of processor time.

The budget is processor time (``ITIMER_PROF``: every thread of this process, user and system), not wall
time: waiting for the probe's child costs this process nothing and has its own limit (``--probe-timeout``),
while every known bomb of the static phase (a quadratic walk, an exploding fold, a huge inlining) burns
processor time. When it runs out, ``AnalysisTimeout`` is raised in the main thread at the next Python
instruction; it derives from BaseException so that no analysis's ``except Exception`` fallback turns it into
a note and goes on. Where no such timer exists (Windows, or off the main thread) the watchdog does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class AnalysisTimeout(BaseException):
    """The model's loading and static analyses used up their processor time (``--timeout``)."""


def _expired(_signum: int, _frame: Any) -> None:
    raise AnalysisTimeout


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise ``AnalysisTimeout`` inside the ``with`` body once it has used ``seconds`` of processor time."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return
    previous = signal.signal(signal.SIGPROF, _expired)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
