"""Running the probe's child process: start, feed, watch the clock, read its messages.

The child runs ``relulint.probe.worker`` in a fresh interpreter (a plain subprocess, isolated: see BOOT: nothing of the parent
is re-imported, and a crash in native code cannot take the parent down). It starts before
the instrumented model is written, so its imports overlap with that work. A run that
exceeds the time limit is killed; a run that dies gives a one-line reason.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import relulint

if TYPE_CHECKING:  # not imported at run time: the command line starts a child before importing numpy
    from relulint.probe.protocol import Job, Outcome

PROGRESS_AFTER = 1.0  # seconds before a progress bar appears
BAR_WIDTH = 24


class Progress:
    """A one-line progress bar on stderr, only on a terminal and only once the probe is slow."""

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_tty(self.stream)
        self.label = label
        self.started = time.monotonic()
        self.shown = False
        self.state = "creating the onnxruntime session"

    def update(self, done: int | None = None, total: int | None = None) -> None:
        if done is not None and total and done <= total:
            filled = int(BAR_WIDTH * done / total)
            self.state = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} batches"
        if not self.enabled or time.monotonic() - self.started < PROGRESS_AFTER:
            return
        self.stream.write(f"\r\x1b[Kprobe {self.label}: {self.state}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# The child's start: ``python -I -c BOOT PATHS PACKAGE``. ``-I`` keeps the working folder, PYTHONPATH,
# the user's site-packages and every PYTHON* variable out of its start-up; BOOT then sets ``sys.path`` to
# the parent's (already without the working folder, see relulint.launch), so the child finds numpy and
# onnxruntime exactly where the parent does, however relulint was installed, and imports ``relulint``
# from the very folder the parent's came from without putting that folder's other files on the path
# (a source checkout run in place would otherwise expose whatever lies beside it).
BOOT = """
import sys, json, importlib.util
sys.path[:] = json.loads(sys.argv[1])
package = sys.argv[2]
spec = importlib.util.spec_from_file_location(
    "relulint", package + "/__init__.py", submodule_search_locations=[package]
)
module = importlib.util.module_from_spec(spec)
sys.modules["relulint"] = module
spec.loader.exec_module(module)
from relulint.probe.worker import main
main()
"""


def child_command() -> list[str]:
    """The command line that starts a probe child (see BOOT)."""
    from relulint.isolation import safe_path

    package = str(Path(relulint.__file__).resolve().parent)
    return [sys.executable, "-I", "-c", BOOT, json.dumps(safe_path(sys.path)), package]


class Child:
    """One probe child process, started before its job is known (see ``prestart``)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")  # onnxruntime has its own thread pool
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed in stop())
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            child_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        # Both are pipes (PIPE above); Popen types them optional for the other choices.
        assert self.process.stdin is not None and self.process.stdout is not None
        self.to_child, self.from_child = self.process.stdin, self.process.stdout
        self.messages: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                self.messages.put(pickle.load(self.from_child))
        except (EOFError, pickle.UnpicklingError, OSError, ValueError):
            pass
        finally:
            self.messages.put(None)

    def send(self, job: Job) -> None:
        self.started = time.monotonic()  # the time limit counts from here, not from the start-up
        try:
            self.to_child.write(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
            self.to_child.close()
        except (BrokenPipeError, OSError):
            pass  # the child died before reading; wait() reports why

    def stop(self, grace: float = 0.0) -> None:
        """End the child (after ``grace`` seconds to exit by itself) and close its streams."""
        if grace:
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.from_child, self.to_child):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        self.stderr.close()

    def wait(self, timeout: float, progress: Progress) -> Outcome | str:
        """The child's outcome, or why there is none (timeout, crash). The child is stopped either way."""
        deadline = self.started + timeout
        finished = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return f"the probe did not finish within {timeout:.3g} s (--probe-timeout); it was stopped"
                try:
                    message = self.messages.get(timeout=min(remaining, 0.2))
                except queue.Empty:
                    progress.update()
                    continue
                if message is None:
                    return self._death()
                if message[0] == "progress":
                    progress.update(message[1], message[2])
                elif message[0] == "outcome":
                    finished = True
                    return message[1]
        finally:
            progress.close()
            if finished:
                # It exits by itself once the outcome is sent, but the kernel takes tens of milliseconds
                # to tear down a large address space (40 ms on the ResNet-50 bench model): reap it aside.
                threading.Thread(target=self.stop, args=(5.0,), daemon=True).start()
            else:
                self.stop()

    def _death(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "the probe's process stopped answering"
        from relulint.probe.protocol import OUT_OF_MEMORY, out_of_memory

        lines = _last_lines(self.stderr)
        last = lines[-1][:300] if lines else ""
        # Before the signal: an allocation that fails where no exception can be raised (a thread's
        # thread-local data under the address-space limit) makes glibc print why and abort.
        if out_of_memory(" ".join(lines)):
            return OUT_OF_MEMORY
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            why = "was killed (out of memory?)" if -code == signal.SIGKILL else f"crashed ({name})"
            return f"the probe's onnxruntime process {why}" + (f": {last}" if last else "")
        return f"the probe's process exited with status {code}" + (f": {last}" if last else "")


def _last_lines(stream: IO[bytes]) -> list[str]:
    """The non-blank lines of the last 4 KB the child wrote on stderr."""
    try:
        stream.seek(0, os.SEEK_END)
        size = stream.tell()
        stream.seek(max(0, size - 4096))
        return [line.strip() for line in stream.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return []


# A child started by the command line before the first model is loaded: its interpreter start
# and imports (about 0.2 s) then overlap the parent's loading instead of delaying the probe.
_spare: Child | None = None


def prestart() -> None:
    """Start a probe child now for the next ``take_child``; stopped at exit if nobody takes it."""
    global _spare
    if _spare is None:
        _spare = Child()
        atexit.register(stop_spare)


def take_child() -> Child:
    """The prestarted child if there is a live one, else a new one."""
    global _spare
    child, _spare = _spare, None
    if child is not None and child.process.poll() is None:
        return child
    if child is not None:
        child.stop()
    return Child()


def stop_spare() -> None:
    global _spare
    if _spare is not None:
        _spare.stop()
        _spare = None
