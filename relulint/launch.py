"""The ``relulint`` command's entry point: start the probe's worker process, then import the rest.

The worker's interpreter start and imports (numpy and onnxruntime, about 0.2 s) then run on
another core while this process imports relulint and loads the first model, instead of
after. The guess is made from the arguments alone; when the configuration turns out to leave
the probe off, the command line stops the worker again (``relulint.cli``).
"""

from __future__ import annotations

import sys

# Arguments after which no probe runs in this process, or may not: no worker is started early.
NO_EARLY_WORKER = {"--no-probe", "--list-rules", "--explain", "-h", "--help", "--version", "--select", "--ignore", "-j", "--jobs"}


def probe_likely(arguments: list[str]) -> bool:
    if not arguments:
        return False
    return not any(argument.split("=", 1)[0] in NO_EARLY_WORKER for argument in arguments)


def main() -> None:
    if probe_likely(sys.argv[1:]):
        from relulint.probe.runner import prestart

        prestart()
    from relulint.cli import main as cli_main

    cli_main()
