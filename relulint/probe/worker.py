"""The probe's child process (started by ``relulint.probe.runner``, isolated as its BOOT says).

It reads a pickled ``Job`` on stdin, limits its own address space, creates one
onnxruntime session on the instrumented model, runs the batches and writes pickled
messages on the original stdout: ``("progress", done, total)`` while it runs, then
``("outcome", Outcome)``. Anything native code prints goes to stderr, never into the
message stream (fd 1 is pointed at stderr before onnxruntime is imported).

A crash, a hang or running out of memory here costs only the probe: the parent notices
and reports the static findings with a note.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

import numpy as np

from relulint.probe.inputs import (
    DataError,
    Feed,
    SamplingStop,
    auto_min_samples,
    batch_rows,
    data_batches,
    data_sample_counts,
    parse_distribution,
    synthetic_batch,
    synthetic_batches,
)
from relulint.probe.protocol import OUT_OF_MEMORY, InputTotals, Job, LayerTap, Outcome, TapTotals, out_of_memory

try:
    import resource
except ImportError:  # not on Windows: no address-space limit there, the parent's timeout still applies
    resource = None  # type: ignore[assignment]

KEPT_ALIVE: list[Any] = []


def send(stream: BinaryIO, message: tuple[Any, ...]) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


def limit_memory(limit: int) -> None:
    """Cap the address space, so that an allocation beyond it fails here instead of swapping the host."""
    if resource is None:
        return
    try:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        wanted = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    except (ValueError, OSError, AttributeError):  # no RLIMIT_AS here: the parent's timeout still applies
        pass


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc only; elsewhere a no-op).

    Creating a session parses the model and rewrites its weights (blocked layouts, packed
    copies); the buffers it frees are mostly under glibc's mmap threshold, so they stay in the
    heap and count in the resident set for the whole run. Measured on the ResNet-50 bench model:
    331 MB resident after session creation, 156 MB after the trim, which took about 10 ms.
    """
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def make_session(job: Job) -> Any:
    import onnxruntime as ort  # already imported by main() while the parent prepared the job

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings would clutter the user's terminal
    # Kahn order with the lowest node index first runs each layer's reductions right after the
    # layer (the instrumentation appends them in an order that makes this so), so activations are
    # freed as in a plain run; the default depth-first order keeps them all alive to the end.
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    # Threads that spin between ops burn CPU the other threads (and processes) need: the probe's
    # many small reduction ops would make that worse than in a plain run.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = job.arena
    if job.threads:
        options.intra_op_num_threads = job.threads
    return ort.InferenceSession(job.model_path, options, providers=["CPUExecutionProvider"])


class Prefetched:
    """Batches made one ahead on a thread: the first while the session is created, each next one
    while onnxruntime runs the current one (both release the GIL). At most two batches exist.
    Without a thread (none can start under a tight --probe-memory) batches are made in turn."""

    def __init__(self, batches: Iterator[Feed]) -> None:
        self.batches = batches
        self.pool: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1)
        self.next = self._submit()

    def _submit(self) -> Future[Feed | None] | None:
        if self.pool is None:
            return None
        try:
            return self.pool.submit(next, self.batches, None)
        except RuntimeError:  # "can't start new thread": the address-space limit left no room for its stack
            self.pool = None
            return None

    def __iter__(self) -> Iterator[Feed]:
        try:
            while True:
                # .result() raises what making the batch raised (DataError)
                feed = self.next.result() if self.next is not None else next(self.batches, None)
                if feed is None:
                    return
                self.next = self._submit()
                yield feed
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)


def run(job: Job, out: BinaryIO) -> Outcome:
    arrived = time.monotonic()
    outcome = Outcome()
    rows = batch_rows(job.specs, job.batch)
    if job.data:
        batches = data_batches(job.specs, job.data, job.batch, job.samples, job.seed)
        outcome.inputs = {s.name: InputTotals(s.channel_axis) for s in job.specs if s.channel_axis is not None}
        try:
            outcome.available = sum(data_sample_counts(job.specs, job.data) or [])
        except DataError:
            pass  # the batches say what is wrong with the data
    else:
        batches = synthetic_batches(job.specs, job.batch, job.samples, parse_distribution(job.distribution), job.seed)
    prefetched = Prefetched(batches)  # the first batch is made while the session is created
    started = time.perf_counter()
    try:
        session = make_session(job)
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types; all mean "cannot load")
        outcome.problem = describe_failure("onnxruntime cannot load the instrumented model", exc)
        return outcome
    outcome.session_seconds = time.perf_counter() - started
    # Never torn down: freeing a large session's weights and arena took 35 ms on the ResNet-50 bench
    # model, and main() ends the process with os._exit once the outcome is sent.
    KEPT_ALIVE.append(session)
    release_free_memory()
    names = [output.name for output in session.get_outputs()]
    wanted = list(dict.fromkeys(name for tap in job.taps for name in tap.outputs))  # grouped taps share outputs
    carried = {spec.name: spec.carried_from for spec in job.specs if spec.carried_from}
    fetched = wanted + [output for output in carried.values() if output not in wanted]
    missing = set(fetched) - set(names)
    if missing:
        outcome.problem = f"onnxruntime dropped {len(missing)} probe outputs"
        return outcome
    if job.trial_run and not job.data:
        trial = synthetic_batch(job.specs, 1, parse_distribution(job.distribution), np.random.default_rng(job.seed))
        try:
            session.run(wanted, trial)
        except Exception as exc:  # noqa: BLE001  (the dims the probe chose do not fit this model)
            outcome.problem = describe_failure("onnxruntime failed while running the model", exc)
            return outcome
    # Grouped layers share their outputs: add each output set up once per batch, split at the end.
    shared = {tap.outputs: tap for tap in job.taps}
    sums = {key: TapTotals(tap.width or tap.units) for key, tap in shared.items()}
    outcome.batch = rows
    total_batches = -(-_expected_samples(job, outcome.available) // rows)
    run_started = time.perf_counter()
    done = 0
    deadline = arrived + job.stop_after if job.stop_after > 0 else None
    stop = SamplingStop(job.auto, deadline, time.monotonic())
    send(out, ("progress", 0, total_batches))  # the session exists: the bar shows batches from here
    previous: dict[str, np.ndarray] = {}
    try:
        for batch in prefetched:
            # A state given as None (not a file's first chunk) is the one the last chunk left.
            feed = {name: previous[carried[name]] if value is None else value for name, value in batch.items()}
            size = _rows(feed, job, rows)
            for name, accumulator in outcome.inputs.items():
                accumulator.add(feed[name])
            values = dict(zip(fetched, session.run(fetched, feed)))
            previous = {output: values[output] for output in carried.values()}
            for key, tap in shared.items():
                sums[key].add(tap, [values[name] for name in key], size)
            del values
            outcome.samples += size
            done += 1
            send(out, ("progress", done, max(total_batches, done)))
            dead = sum(int(np.count_nonzero(totals.positive == 0)) for totals in sums.values())
            outcome.stopped = stop.after_batch(outcome.samples, dead, time.monotonic())
            if outcome.stopped:
                break
        else:
            outcome.stopped = "cap" if job.samples and outcome.samples >= job.samples else "data"
    except DataError as exc:
        outcome.problem = str(exc)
    except Exception as exc:  # noqa: BLE001  (any failure of a run ends the probe with a reason)
        outcome.problem = describe_failure("onnxruntime failed while running the model", exc)
    outcome.run_seconds = time.perf_counter() - run_started
    outcome.totals = {tap.layer: _layer_totals(sums[tap.outputs], tap) for tap in job.taps}
    return outcome


def _expected_samples(job: Job, available: int) -> int:
    """For the progress bar: the cap, the data's size, or what --samples auto needs at least."""
    if job.samples:
        return job.samples if not available else min(job.samples, available)
    if available:
        return available
    return auto_min_samples()  # --samples auto on synthetic inputs; the bar grows past it if needed


def _layer_totals(sums: TapTotals, tap: LayerTap) -> TapTotals:
    return sums.part(tap.offset, tap.units) if tap.width else sums


def _rows(feed: dict[str, np.ndarray], job: Job, default: int) -> int:
    """Samples in this batch: dim 0 of an input that follows the batch size."""
    for spec in job.specs:
        if spec.batched and feed[spec.name].ndim > spec.batch_axis:
            return int(feed[spec.name].shape[spec.batch_axis])
    return default


def describe_failure(what: str, exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, MemoryError) or out_of_memory(f"{type(exc).__name__} {text}"):
        return OUT_OF_MEMORY
    text = text.replace("[ONNXRuntimeError] : ", "")
    return f"{what}: {text[:300]}"


def main() -> None:
    np.seterr(all="ignore")
    protocol_fd = os.dup(1)
    os.dup2(2, 1)  # native code that prints to stdout must not corrupt the message stream
    out = os.fdopen(protocol_fd, "wb")
    import onnxruntime  # noqa: F401  (the slow import overlaps with the parent writing the model)

    job: Job = pickle.load(sys.stdin.buffer)
    limit_memory(job.memory_limit)
    outcome = run(job, out)
    if resource is not None:
        outcome.peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    send(out, ("outcome", outcome))
    out.close()
    # Tearing down a large session takes a noticeable time and nothing is left to save.
    os._exit(0)


if __name__ == "__main__":
    main()
