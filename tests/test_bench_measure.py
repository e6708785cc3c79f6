"""The bench's measuring instrument (bench/measure.py): the CPU time of a command's whole process tree."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from measure import run_once  # noqa: E402

# A child that burns 0.3 s of processor time (counted by itself, so the load of the machine does not
# matter) after its parent has exited without waiting for it, as relulint's probe child may outlive
# relulint by the time it takes to tear it down.
ORPHANING = """
import subprocess, sys
burn = "import time\\nwhile time.process_time() < 0.3: pass"
subprocess.Popen([sys.executable, "-c", burn])
"""


def test_cpu_time_counts_a_child_the_command_left_running():
    sample = run_once([sys.executable, "-c", ORPHANING], timeout=60)
    assert sample.returncode == 0
    assert sample.cpu_s >= 0.3


def test_cpu_time_counts_a_child_the_command_waited_for():
    waiting = ORPHANING.replace("subprocess.Popen(", "subprocess.run(")
    sample = run_once([sys.executable, "-c", waiting], timeout=60)
    assert sample.returncode == 0
    assert sample.cpu_s >= 0.3


def test_the_runner_is_a_subreaper_only_while_it_measures():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    flag = ctypes.c_int(-1)
    run_once([sys.executable, "-c", "pass"], timeout=60)
    assert libc.prctl(37, ctypes.byref(flag), 0, 0, 0) == 0  # PR_GET_CHILD_SUBREAPER
    assert flag.value == 0
