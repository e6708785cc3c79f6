"""The static phase's watchdog (``--timeout``): one model's loading and analyses get a budget of processor time.

The budget is processor time (``ITIMER_PROF``: every thread of this process, user and system), not wall
time: waiting for the probe's child costs this process nothing and has its own limit (``--probe-timeout``),
while every known bomb of the static phase (a quadratic walk, an exploding fold, a huge inlining) burns
processor time. When it runs out, ``AnalysisTimeout`` is raised in the main thread at the next Python
instruction; it derives from BaseException so that no analysis's ``except Exception`` fallback turns it into
a note and goes on. Where no such timer exists (Windows, or off the main thread) the watchdog does nothing.

Python cannot raise from every place a signal lands: inside a weakref callback or a ``__del__`` (the import
system runs such callbacks) the exception is "unraisable", printed and dropped. A dropped timeout is not printed:
the timer is set again, to fire ``RETRY`` seconds later.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class AnalysisTimeout(BaseException):
    """The model's loading and static analyses used up their processor time (``--timeout``)."""


RETRY = 0.02  # processor seconds from a dropped timeout to the next


def _expired(_signum: int, _frame: Any) -> None:
    raise AnalysisTimeout


def _quiet_about_timeouts(previous: Any) -> Any:
    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, AnalysisTimeout):
            signal.setitimer(signal.ITIMER_PROF, RETRY)
        else:
            previous(unraisable)

    return hook


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise ``AnalysisTimeout`` inside the ``with`` body once it has used ``seconds`` of processor time."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return
    previous = signal.signal(signal.SIGPROF, _expired)
    previous_hook, sys.unraisablehook = sys.unraisablehook, _quiet_about_timeouts(sys.unraisablehook)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
        sys.unraisablehook = previous_hook
