"""The probe analysis: instrument, run in a child process; the totals become a ``ProbeResult`` in ``probe.collect``."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

from relulint.config import Config
from relulint.context import Context
from relulint.external import expected_nbytes
from relulint.findings import Note
from relulint.probe.collect import note_skipped_layers, note_unmeasured_layers, probe_result, set_metrics, stopping_note
from relulint.probe.hints import Hints, shape_hints
from relulint.probe.inputs import (
    DataError,
    InputSpec,
    sample_shapes,
    shapes_vary,
)
from relulint.probe.instrument import Instrumentation, plan
from relulint.probe.protocol import Job
from relulint.probe.runner import Child, Progress, take_child
from relulint.probe.shapes import TensorInfo, infer_shapes
from relulint.probe.specs import ATTEMPTS, DefaultedDims, Specs, carried_states, first_linear, input_specs
from relulint.probe.writer import LinkRefused, write_model

# Address space of the child before any tensor: interpreter, numpy, onnxruntime, thread stacks.
BASELINE_MEMORY = 512 * 1024**2
WEIGHT_COPIES = 2  # onnxruntime keeps the weights and a packed copy of most of them
LIVE_ACTIVATIONS = 5  # activations of the largest size alive at once, transients included
TriedShapes = frozenset[tuple[tuple[int, ...], ...]]  # per attempt made: the shapes of its inputs


class PendingProbe:
    """A probe whose job was sent: the child creates its session and runs while the parent works."""

    def __init__(
        self,
        ctx: Context,
        child: Child,
        instrumentation: Instrumentation,
        folder: tempfile.TemporaryDirectory[str],
        data_folder: tempfile.TemporaryDirectory[str] | None,
        defaulted: list[DefaultedDims],
        attempt: int,
        notes: list[Note],
        budget: float,
    ) -> None:
        self.ctx = ctx
        self.child = child
        self.instrumentation = instrumentation
        self.folder = folder  # holds the instrumented model until the child has read it
        self.data_folder = data_folder  # images or audio decoded for the child (see relulint.probe.media)
        self.defaulted = defaulted  # dynamic dims the probe chose itself
        self.attempt = attempt  # which default sizes (specs.IMAGE_SIZES, OTHER_DIMS) were tried
        self.notes = notes  # the notes its preparation added, replaced when it is retried
        self.budget = budget  # seconds this attempt may take: --probe-timeout, shared by the retries
        self.tried: TriedShapes = frozenset()  # the input shapes tried so far (one tuple of shapes each)
        self.rejected: list[str] = []  # the default dims onnxruntime rejected before this attempt, for the note
        self.specs: list[InputSpec] = []  # what this attempt feeds
        self.hinted = ""  # the sizes the model hinted at, when this attempt uses them (see probe.hints)
        self.hints_tried = False  # an attempt with the model's hints was made (it is made once)

    def finish(self) -> None:
        """Wait for the child and store the result in ``ctx.analyses.probe``, or a note saying why not."""
        ctx = self.ctx
        try:
            outcome = self.child.wait(self.budget, Progress(ctx.path))  # stops the child
        finally:
            self._cleanup()
        if isinstance(outcome, str):  # stopped: a timeout, the memory cap, a crash
            return _skip(ctx, outcome, unfinished=True)
        if outcome.problem:
            left = self.budget - (time.monotonic() - self.child.started)
            retry = (self.defaulted or self.hinted) and left > MIN_RETRY_SECONDS
            if retry and outcome.problem.startswith(SHAPE_FAILURES):
                hints = None if self.hints_tried else shape_hints(ctx.graph, self.specs)
                if hints is not None and hints.sizes:
                    return self._retry(outcome.problem, left, hints)
                if self.attempt + 1 < ATTEMPTS:
                    return self._retry(outcome.problem, left)
            return _skip(ctx, outcome.problem, unfinished="out of memory" in outcome.problem)
        if not outcome.samples:
            return _skip(ctx, "the data held no samples")
        stopping_note(ctx, outcome, sampling(ctx.config)[1])
        result = probe_result(ctx, self.instrumentation, outcome, self.specs)
        note_unmeasured_layers(ctx, result, self.instrumentation)
        ctx.analyses.probe = result
        set_metrics(ctx, result)

    def _retry(self, problem: str, budget: float, hints: Hints | None = None) -> None:
        """onnxruntime rejected the dims the probe chose: try the sizes the model hints at (once), then the
        next plausible sizes, saying so."""
        ctx = self.ctx
        ctx.notes[:] = [note for note in ctx.notes if not any(note is mine for mine in self.notes)]
        rejected = [*self.rejected, self.hinted or "; ".join(map(str, self.defaulted))]
        attempt = self.attempt if hints is not None else self.attempt + 1
        hinted = hints.shapes(self.specs) if hints is not None else None
        child = take_child()
        try:
            pending = _prepare_and_send(ctx, child, attempt, budget, self.tried, hinted)
        except BaseException:
            child.stop()
            raise
        if pending is None:
            child.stop()
            return None
        why = problem.partition(": ")[2].partition(" Status Message:")[0].removeprefix("1 : FAIL : ")[:160]
        pending.rejected = rejected
        pending.hints_tried = True if hints is not None else self.hints_tried
        if hints is not None:
            pending.hinted = "the sizes the model hints at"
        used = f"; then the sizes the model hints at: {'; '.join(hints.sources)}" if hints is not None else ""
        retry_note = Note(
            "info", f"probe inputs: onnxruntime rejected the default dims ({', then '.join(rejected)}): {why}{used}"
        )
        ctx.notes.append(retry_note)
        pending.notes.append(retry_note)
        return pending.finish()

    def cancel(self) -> None:
        self.child.stop()
        self._cleanup()

    def _cleanup(self) -> None:
        self.folder.cleanup()
        if self.data_folder is not None:
            self.data_folder.cleanup()


def run_probe(ctx: Context) -> None:
    pending = start_probe(ctx)
    if pending is not None:
        pending.finish()


def start_probe(ctx: Context) -> PendingProbe | None:
    """Instrument the model and send the job to a child; None when the probe cannot run (a note says why)."""
    if not ctx.layers:
        return None  # nothing to measure, and nothing worth a note
    child = take_child()  # started first (or by the command line): its imports overlap the preparation
    try:
        pending = _prepare_and_send(ctx, child)
    except BaseException:
        child.stop()
        raise
    if pending is None:
        child.stop()
    return pending


def _skip(ctx: Context, why: str, unfinished: bool = False) -> None:
    ctx.notes.append(Note("skipped", f"the probe did not run: {why}; static findings only", unfinished=unfinished))


# Failures that different input dims may cure (shape mismatches surface at load or at the first run).
MIN_RETRY_SECONDS = 5.0  # of --probe-timeout left, below which a retry could not finish anyway
SHAPE_FAILURES = ("onnxruntime cannot load", "onnxruntime failed while running")


def _shape_examples(specs: Specs) -> list[tuple[str, str]]:
    """``--input-shape`` values for the inputs whose dims were defaulted, as they were probed (one sample)."""
    defaulted = {entry.input for entry in specs.defaulted}
    examples = []
    for spec in specs.specs:
        if spec.name in defaulted and spec.constant is None:  # a mask follows the token ids
            dims = list(spec.shape)
            if spec.batched and dims:
                dims[spec.batch_axis] = 1
            examples.append((spec.name, "x".join(str(d) for d in dims)))
    return examples or [("NAME", "1x3x224x224")]


def _shapes(specs: Specs) -> tuple[tuple[int, ...], ...]:
    return tuple(spec.shape for spec in specs.specs)


def _prepare_and_send(
    ctx: Context,
    child: Child,
    attempt: int = 0,
    budget: float | None = None,
    tried: TriedShapes = frozenset(),
    hinted: dict[str, tuple[int, ...]] | None = None,
) -> PendingProbe | None:
    data_folder = None
    try:
        data = _data_source(ctx, attempt)
        if isinstance(data, tempfile.TemporaryDirectory):
            data_folder, data = data, data.name
        pending = None if data is False else _prepare(ctx, child, data, data_folder, attempt, budget, tried, hinted)
    except BaseException:
        if data_folder is not None:
            data_folder.cleanup()
        raise
    if pending is None and data_folder is not None:
        data_folder.cleanup()
    return pending


def _data_source(ctx: Context, attempt: int) -> str | tempfile.TemporaryDirectory[str] | Literal[False] | None:
    """The --data path the child reads: the user's arrays, or a folder of the images or audio decoded
    here; None without --data; False when the data cannot be used (a note says why)."""
    config = ctx.config
    if not config.data:
        return None
    from relulint.probe.media import inspect_source, prepare

    try:
        source = inspect_source(config.data)
    except DataError as exc:
        _skip(ctx, str(exc))
        return False
    if source.kind == "arrays":
        return config.data
    specs = input_specs(ctx.graph, config, config.batch, None, attempt)
    if specs.problem:
        _skip(ctx, specs.problem)
        return False
    specs.specs = carried_states(ctx.graph, specs.specs, set())
    folder = tempfile.TemporaryDirectory(prefix="relulint-data-", ignore_cleanup_errors=True)
    try:
        cap, _ = sampling(config)
        prepared = prepare(
            source, specs.specs, config.preprocess, Path(folder.name), cap, config.seed, config.probe_memory
        )
    except DataError as exc:
        folder.cleanup()
        _skip(ctx, str(exc))
        return False
    except BaseException:
        folder.cleanup()
        raise
    shapes = ", ".join("x".join(map(str, shape)) for shape in prepared.shapes[:4])
    if len(prepared.shapes) > 1:
        more = ", ..." if len(prepared.shapes) > 4 else ""
        shapes = f"in {len(prepared.shapes)} shapes ({shapes}{more}), each run in batches of its own"
    else:
        shapes = f"shaped {shapes}"
    problems = prepared.problems()
    left = f"; {problems}" if problems else ""
    ctx.notes.append(Note("info", f"probe data: {prepared.how} from {config.data}, samples {shapes}{left}"))
    return folder


def _prepare(
    ctx: Context,
    child: Child,
    data: str | None,
    data_folder: tempfile.TemporaryDirectory[str] | None,
    attempt: int,
    budget: float | None,
    tried: TriedShapes,
    hinted: dict[str, tuple[int, ...]] | None = None,
) -> PendingProbe | None:
    config = ctx.config
    budget = config.probe_seconds if budget is None else budget
    first_note = len(ctx.notes) - (data_folder is not None)  # the decoding note belongs to this attempt
    data_shapes = None
    varying = False
    if data:
        names = [i.name for i in ctx.loaded.model.graph.input if i.name not in ctx.graph.initializers]
        data_shapes = sample_shapes(data, names)
    wanted_batch = config.batch
    specs = _input_specs(ctx, wanted_batch, data_shapes, attempt, data, hinted)
    carried = [spec for spec in specs.specs if spec.carried_from]
    if carried:
        wanted_batch = 1  # chunk k + 1 takes the state chunk k left: one chunk per run
        specs = _input_specs(ctx, wanted_batch, data_shapes, attempt, data, hinted)
        pairs = ", ".join(f"'{spec.name}' from '{spec.carried_from}'" for spec in carried)
        ctx.notes.append(
            Note(
                "info",
                f"probe inputs: recurrent state carried between chunks ({pairs}): zeros with the first chunk "
                "of each data file, then what the previous chunk output; one chunk per run, in file order",
            )
        )
    while specs.defaulted and _shapes(specs) in tried and attempt + 1 < ATTEMPTS:
        attempt += 1  # a fixed dim can make two default sizes the same: try each shape once
        specs = _input_specs(ctx, wanted_batch, data_shapes, attempt, data, hinted)
    if specs.problem:
        _skip(ctx, specs.problem)
        return None
    if specs.defaulted:
        ctx.notes.append(
            Note(
                "info",
                f"probe inputs: dynamic dims set by default ({'; '.join(map(str, specs.defaulted))}); set them with "
                + " ".join(f"--input-shape {name}={shape}" for name, shape in _shape_examples(specs)),
            )
        )
    shapes = infer_shapes(ctx.graph, specs.specs)
    batch = _fitting_batch(ctx, specs.specs, shapes, wanted_batch, config.probe_memory)
    if batch == 0:
        _skip(ctx, f"one sample needs more than the {_size(config.probe_memory)} --probe-memory allows")
        return None
    if batch != wanted_batch:
        ctx.notes.append(
            Note(
                "info",
                f"probe batch lowered from {wanted_batch} to {batch} to fit --probe-memory {_size(config.probe_memory)}",
            )
        )
        specs = _input_specs(ctx, batch, data_shapes, attempt, data, hinted)
    if data:
        varying = shapes_vary(data, specs.specs)
    instrumentation = plan(ctx.graph, ctx.layers, shapes, pooled=not varying)
    note_skipped_layers(ctx, instrumentation)
    if not instrumentation.taps:
        _skip(ctx, "no layer could be instrumented")
        return None
    fed = _with_data_axes(ctx, specs.specs) if config.data else _with_domains(specs.specs, config)
    cap, auto = sampling(config)
    # Cleanup errors are ignored: where open files cannot be removed, the child may still hold it.
    folder = tempfile.TemporaryDirectory(prefix="relulint-probe-", ignore_cleanup_errors=True)
    try:
        states = frozenset(spec.carried_from for spec in specs.specs if spec.carried_from)
        path = write_model(ctx.graph, instrumentation, Path(folder.name), ctx.notes, keep=states)
    except LinkRefused as exc:
        folder.cleanup()
        _skip(ctx, str(exc))
        return None
    except BaseException:
        folder.cleanup()
        raise
    child.send(
        Job(
            model_path=str(path),
            specs=fed,
            taps=instrumentation.taps,
            batch=batch,
            samples=cap,
            distribution=config.input_dist,
            data=data,
            seed=config.seed,
            memory_limit=config.probe_memory,
            auto=auto,
            stop_after=stop_after(budget),
            trial_run=bool(specs.defaulted),
        )
    )
    pending = PendingProbe(
        ctx, child, instrumentation, folder, data_folder, specs.defaulted, attempt, ctx.notes[first_note:], budget
    )
    pending.tried = tried | {_shapes(specs)}
    pending.specs = specs.specs
    return pending


def _input_specs(
    ctx: Context,
    batch: int,
    data_shapes: dict[str, tuple[int, ...]] | None,
    attempt: int,
    data: str | None,
    hinted: dict[str, tuple[int, ...]] | None = None,
) -> Specs:
    """The inputs' specs, with the shapes the model hinted at (as if given with --input-shape); with real
    data, recurrent states the data does not hold are carried (see ``specs.carried_states``)."""
    config = replace(ctx.config, input_shapes={**hinted, **ctx.config.input_shapes}) if hinted else ctx.config
    specs = input_specs(ctx.graph, config, batch, data_shapes, attempt)
    if data and not specs.problem:
        # A state the data gives once (exactly the input's fixed shape, as an initial state) is carried too:
        # chunks of one sequence (a sequence export whose dim 0 is the time axis) must not each restart it.
        fixed = {spec.name: spec.shape for spec in specs.specs if not spec.batched}
        held = {name for name, shape in (data_shapes or {}).items() if fixed.get(name) != tuple(shape)}
        specs.specs = carried_states(ctx.graph, specs.specs, held)
    return specs


def sampling(config: Config) -> tuple[int, bool]:
    """(cap, auto): --samples N caps; auto (the default without --data) stops once the dead units settle;
    with --data the default is every sample it holds (cap 0), within the time limit."""
    if isinstance(config.samples, int):
        return config.samples, False
    return 0, config.samples == "auto" or config.data is None


# The child stops drawing batches this long before --probe-timeout, to send what it measured in time.
TIMEOUT_SHARE = 0.8


def stop_after(timeout: float) -> float:
    return max(timeout * TIMEOUT_SHARE - 1.0, timeout / 2)


def _with_domains(specs: list[InputSpec], config: Config) -> list[InputSpec]:
    """Float inputs with an --input-range are drawn uniformly from it: a model trained on [0, 1] never
    sees the negative values of normal noise, which switch on units real data never does."""
    return [
        replace(spec, domain=config.input_ranges[spec.name])
        if spec.name in config.input_ranges and spec.dtype.startswith(("float", "bfloat"))
        else spec
        for spec in specs
    ]


def _with_data_axes(ctx: Context, specs: list[InputSpec]) -> list[InputSpec]:
    """Ask the child for per-channel statistics of float inputs that feed a linear op directly (RL505)."""
    updated = []
    for spec in specs:
        measured = spec.dtype.startswith(("float", "bfloat")) and not spec.carried_from  # a state is no data
        reached = first_linear(ctx.graph, spec.name) if measured else None
        axis = None
        if reached is not None and len(spec.shape) >= 2:
            axis = reached[1] % len(spec.shape)
        updated.append(replace(spec, channel_axis=axis))
    return updated


def _fitting_batch(ctx: Context, specs: list[InputSpec], shapes: dict[str, TensorInfo], batch: int, limit: int) -> int:
    """The largest batch (at most ``batch``) whose estimated memory fits ``limit``; 0: not even one sample."""
    weights = sum(expected_nbytes(t) or 0 for t in ctx.graph.initializers.values())
    sizes = [info.nbytes() for tensor, info in shapes.items() if tensor not in ctx.graph.initializers]
    largest = max((s for s in sizes if s), default=0)
    fixed = WEIGHT_COPIES * weights + BASELINE_MEMORY
    if fixed + LIVE_ACTIVATIONS * largest <= limit:
        return batch
    if not any(spec.batched for spec in specs) or fixed >= limit:
        return 0
    per_sample = LIVE_ACTIVATIONS * largest / batch
    return max(0, min(batch, int((limit - fixed) // per_sample)))


def _size(size: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:g}{unit}"
    return f"{size}B"
