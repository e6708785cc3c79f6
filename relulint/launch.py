"""The ``relulint`` command's entry point: start the probe's worker process, then import the rest.

The worker's interpreter start and imports (numpy and onnxruntime, about 0.2 s) then run on
another core while this process imports relulint and loads the first model, instead of
after. The guess is made from the arguments alone; when the configuration turns out to leave
the probe off, the command line stops the worker again (``relulint.cli``).
"""

from __future__ import annotations

import atexit
import os
import sys

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
