"""Run one command in a child process and measure its wall time, CPU time and peak memory.

Peak RSS is the larger of two readings sampled every 20 ms from /proc while the command runs:
- the largest ``VmHWM`` (the kernel's exact high-water mark of one process's RSS) seen in the tree;
- the largest *sum* of ``VmRSS`` over the process and its live descendants: this catches a parent and
  a worker process holding memory at the same time (relulint's probe runs in a child process), which
  a per-process peak would count only once.
``ru_maxrss`` from ``wait4`` is used only for a command that ends before the first sample: after a
fork it also counts the forking parent's memory, so for a benchmark runner holding models it lies.

CPU time is that of the whole tree. ``wait4`` counts a process and the descendants it waited for, not
one it left running: relulint reaps its probe child on a thread once the outcome is in, and when it
exits first the child's time was lost (2 of 3 samples of a bench run). So the runner makes itself the
"child subreaper" of what it starts (prctl): a process orphaned in the tree becomes its child, and it
waits for each one after the command ends and adds its time.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_SECONDS = 0.02


@dataclass
class Sample:
    wall_s: float
    rss_mb: float  # max(ru_maxrss of the largest process, sampled peak of the tree's sum)
    returncode: int
    cpu_s: float = 0.0  # user + system time of the process and all its descendants (orphans included)
    work_s: float | None = None  # the task's own timing, when it prints {"work_s": ...}
    stdout: str = ""
    stderr: str = ""


@dataclass
class Measurement:
    label: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return statistics.median(s.wall_s for s in self.samples)

    @property
    def rss_mb(self) -> float:
        return statistics.median(s.rss_mb for s in self.samples)

    @property
    def cpu_s(self) -> float:
        return statistics.median(s.cpu_s for s in self.samples)

    @property
    def work_s(self) -> float | None:
        works = [s.work_s for s in self.samples if s.work_s is not None]
        return statistics.median(works) if works else None


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue
        # ppid is the 2nd field after the ")" that closes the command name
        ppid = int(text[text.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in kB; zeros once it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def tree_pids(root: int) -> list[int]:
    children = _children_map()
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


class _TreeSampler(threading.Thread):
    """Samples the tree's memory; the process list (a scan of /proc) is refreshed every 5th sample."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0  # 0: no sample was taken
        self.done = threading.Event()

    def run(self) -> None:
        pids, count = [self.pid], 0
        while not self.done.wait(SAMPLE_SECONDS):
            if count % 5 == 0:
                pids = tree_pids(self.pid)
            count += 1
            readings = [_memory_kb(pid) for pid in pids]
            summed = sum(rss for rss, _ in readings)
            largest = max((hwm for _, hwm in readings), default=0)
            self.peak_kb = max(self.peak_kb, summed, largest)


PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37  # linux/prctl.h


@contextmanager
def _subreaper() -> Iterator[None]:
    """While inside, orphaned descendants of this process become its children (not init's), so it can
    reap them; the setting before is restored after."""
    libc = ctypes.CDLL(None, use_errno=True)
    previous = ctypes.c_int(0)
    if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_GET_CHILD_SUBREAPER) failed")
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, previous.value, 0, 0, 0)


def _own_children() -> set[int]:
    return set(_children_map().get(os.getpid(), ()))


def _reap_orphans(before: set[int], deadline: float) -> float:
    """Wait for the command's descendants it left running (now this process's children: it is their
    subreaper; none existed in ``before``), killing those still alive at ``deadline``; their CPU seconds."""
    cpu = 0.0
    while orphans := _own_children() - before:
        for pid in orphans:
            while True:
                try:
                    reaped, _, usage = os.wait4(pid, os.WNOHANG)
                except ChildProcessError:
                    break  # reaped elsewhere
                if reaped:
                    cpu += usage.ru_utime + usage.ru_stime
                    break
                if time.perf_counter() > deadline:
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.002)
    return cpu


def run_once(command: list[str], env: dict[str, str] | None = None, timeout: float = 600.0) -> Sample:
    before = _own_children()
    with _subreaper(), tempfile.TemporaryDirectory(prefix="relulint-bench-") as tmp:
        out_path, err_path = Path(tmp, "out"), Path(tmp, "err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.perf_counter()
            process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
            sampler = _TreeSampler(process.pid)
            sampler.start()
            deadline = started + timeout
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    process.kill()
                    pid, status, usage = os.wait4(process.pid, 0)
                    break
                time.sleep(0.002)
            wall = time.perf_counter() - started
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting
            sampler.done.set()
            sampler.join()
            cpu = usage.ru_utime + usage.ru_stime + _reap_orphans(before, deadline)
        stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    peak_kb = sampler.peak_kb or usage.ru_maxrss
    return Sample(wall, peak_kb / 1024, process.returncode, cpu, _work_seconds(stdout), stdout, stderr)


def _work_seconds(stdout: str) -> float | None:
    lines = stdout.strip().splitlines()
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except ValueError:
        return None
    return value.get("work_s") if isinstance(value, dict) else None
