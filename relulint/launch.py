"""The ``relulint`` command's entry point: drop the working folder from the import path, start the
probe's worker process, then import the rest.

Isolation: a linted tree is data, never code. Python puts the working folder first on ``sys.path``
for ``python -m relulint`` (and ``PYTHONPATH=.`` does so for any start), so a ``numpy.py`` or
``onnx.py`` lying there would run with the user's rights. ``isolate()`` removes those entries before
anything but the standard library's start-up modules is imported, and sets ``PYTHONSAFEPATH`` so that
interpreters started from here (the ``--jobs`` pool where it spawns) never add it back. Only the folder
entries are dropped, not ``PYTHONPATH`` or the user's site-packages as ``-I`` would: an install that
relies on them (a ``--target`` install, an editable checkout, ``pip install --user``) keeps working.
``python -m relulint`` itself still finds ``relulint`` by Python's own rule, before any of this runs:
in a folder one does not trust, run the ``relulint`` command or ``python -P -m relulint``.

The worker's interpreter start and imports (numpy and onnxruntime, about 0.2 s) then run on
another core while this process imports relulint and loads the first model, instead of
after. The guess is made from the arguments alone; when the configuration turns out to leave
the probe off, the command line stops the worker again (``relulint.cli``).
"""

from __future__ import annotations

import atexit
import os
import sys

from relulint.isolation import isolate

# Arguments after which no probe runs in this process, or may not: no worker is started early.
NO_EARLY_WORKER = {
    "--no-probe",
    "--list-rules",
    "--explain",
    "-h",
    "--help",
    "--version",
    "--select",
    "--ignore",
    "-j",
    "--jobs",
}


def probe_likely(arguments: list[str]) -> bool:
    if not arguments:
        return False
    return not any(argument.split("=", 1)[0] in NO_EARLY_WORKER for argument in arguments)


def main() -> None:
    isolate()
    if sys.argv[1:] == ["--version"]:
        # Answered before the command line's imports (numpy, click, the rules: about 0.15 s), as click would.
        from relulint import __version__

        print(f"relulint, version {__version__}")
        exit_now(0)
    if probe_likely(sys.argv[1:]):
        from relulint.probe.runner import prestart

        prestart()
    from relulint.cli import main as cli_main

    try:
        cli_main()
    except SystemExit as exc:
        exit_now(exc.code)
    exit_now(0)


def exit_now(code: object) -> None:
    """End the process without tearing the interpreter down.

    Freeing every object of a large model's analysis one by one took about 35 ms on the ResNet-50 bench
    model; the kernel frees the memory at once. Exit handlers still run and output is flushed.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): Python prints it and exits with 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (relulint ... | head) or a closed stream
            pass
    os._exit(status)
