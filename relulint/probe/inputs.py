"""What the probe feeds the model: synthetic batches or batches streamed from data files.

This module runs in the probe's child process, so it imports numpy only (no onnx, no
relulint core). The parent describes each model input as an ``InputSpec``; the child
turns specs into batches with ``synthetic_batches`` or ``data_batches``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from relulint.probe.structured import DEFAULT_DOMAIN as STRUCTURED_DOMAIN
from relulint.probe.structured import KINDS as STRUCTURED_KINDS
from relulint.probe.structured import NAMES as STRUCTURED_NAMES
from relulint.probe.structured import unit_samples

DATA_SUFFIXES = (".npz", ".npy")

# One run's inputs by name. None: a recurrent state carried over, which the worker feeds from the
# previous run's outputs (a sequence's later chunks).
Feed = dict[str, np.ndarray | None]


class DataError(Exception):
    """The --data source cannot feed this model; the message says why, in one line."""


@dataclass(frozen=True)
class InputSpec:
    """One model input as the probe fills it."""

    name: str
    dtype: str  # numpy dtype name, e.g. "float32", "int64", "bool"
    shape: tuple[int, ...]  # one batch, every dim concrete
    batched: bool  # dim ``batch_axis`` follows the probe's batch size (it is dynamic in the model)
    int_high: int = 2  # integers are drawn from [0, int_high): a Gather's table size when it feeds one
    channel_axis: int | None = None  # axis whose per-channel statistics RL505 reads, None: not collected
    batch_axis: int = 0  # where the samples are: 1 for a recurrent state [layers, batch, hidden]
    # The input's domain (--input-range): synthetic values are drawn uniformly from it instead of the
    # --input-dist (one (lo, hi) for every element, or one per channel on axis 1).
    domain: tuple[tuple[float, float], ...] | None = None
    # Dims the model leaves dynamic besides the batch axis: real data may set them differently per file
    # (images of different sizes), each shape running in batches of its own.
    free_axes: tuple[int, ...] = ()
    # A recurrent state fed back: zeros with the first chunk of each data file, then this output of the
    # previous chunk (see ``carried_states``). None: an ordinary input.
    carried_from: str | None = None
    # Every element this value, synthetic or missing from --data: an attention mask is all ones (keep
    # every token), where random 0/1 would mask out half the sequence.
    constant: int | None = None


@dataclass(frozen=True)
class Distribution:
    kind: str  # "normal", "uniform" or one of structured.KINDS
    a: float  # mean or low (structured kinds: unused)
    b: float  # std or high

    def describe(self) -> str:
        if self.kind == "normal":
            return f"normal(mean {self.a:g}, std {self.b:g})"
        if self.kind in STRUCTURED_KINDS:
            return f"{STRUCTURED_NAMES[self.kind]} in [-1, 1]"
        return f"uniform({self.a:g}, {self.b:g})"


def parse_distribution(text: str) -> Distribution:
    """``normal``, ``normal:MEAN,STD``, ``uniform:LOW,HIGH`` or a structured kind (the config has checked it)."""
    kind, _, args = text.partition(":")
    if kind == "normal" and not args:
        return Distribution("normal", 0.0, 1.0)
    if kind in STRUCTURED_KINDS and not args:
        return Distribution(kind, 0.0, 1.0)
    numbers = [float(v) for v in re.split(r",", args)] if args else []
    if kind not in ("normal", "uniform") or len(numbers) != 2:
        raise ValueError(f"input distribution must be normal, normal:MEAN,STD or uniform:LOW,HIGH, got {text!r}")
    return Distribution(kind, numbers[0], numbers[1])


def synthetic_batch(
    specs: list[InputSpec], rows: int, dist: Distribution, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One batch of ``rows`` samples (inputs whose dim 0 is fixed keep their own size)."""
    feed = {}
    for spec in specs:
        shape = with_rows(spec, rows)
        dtype = np.dtype(spec.dtype)
        if spec.constant is not None:
            feed[spec.name] = np.full(shape, spec.constant, dtype)
        elif dtype == np.bool_:
            feed[spec.name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            feed[spec.name] = rng.integers(0, max(spec.int_high, 1), size=shape).astype(dtype)
        elif dist.kind in STRUCTURED_KINDS:
            samples = unit_samples(dist.kind, shape, rng)
            feed[spec.name] = _into_domain(samples, dtype, spec.domain or STRUCTURED_DOMAIN)
        elif spec.domain:
            feed[spec.name] = _in_domain(shape, dtype, spec.domain, rng)
        else:
            feed[spec.name] = _floats(shape, dtype, dist, rng)
    return feed


def with_rows(spec: InputSpec, rows: int) -> tuple[int, ...]:
    """The spec's shape with ``rows`` samples on its batch axis (unchanged when it is given once)."""
    if not spec.batched:
        return spec.shape
    return (*spec.shape[: spec.batch_axis], rows, *spec.shape[spec.batch_axis + 1 :])


def _in_domain(
    shape: tuple[int, ...], dtype: np.dtype, domain: tuple[tuple[float, float], ...], rng: np.random.Generator
) -> np.ndarray:
    """Uniform over the input's domain: per channel (axis 1) when it gives one range per channel."""
    return _into_domain(rng.random(shape, dtype=np.float64 if dtype == np.float64 else np.float32), dtype, domain)


def _into_domain(values: np.ndarray, dtype: np.dtype, domain: tuple[tuple[float, float], ...]) -> np.ndarray:
    """``values`` in [0, 1] mapped onto the domain, in place: per channel (axis 1) when it has one range each."""
    shape = values.shape
    low = np.array([lo for lo, _ in domain], values.dtype)
    high = np.array([hi for _, hi in domain], values.dtype)
    if len(domain) > 1 and len(shape) > 1 and shape[1] == len(domain):
        view = (1, len(domain)) + (1,) * (len(shape) - 2)
        low, high = low.reshape(view), high.reshape(view)
    else:
        low, high = low[:1], high[:1]
    values *= high - low
    values += low
    return values if values.dtype == dtype else values.astype(dtype)


def _floats(shape: tuple[int, ...], dtype: np.dtype, dist: Distribution, rng: np.random.Generator) -> np.ndarray:
    """Drawn in float32 (or float64) directly and scaled in place: no float64 copies of a big batch."""
    draw_type = np.float64 if dtype == np.float64 else np.float32
    if dist.kind == "normal":
        values = rng.standard_normal(shape, dtype=draw_type)
        values *= dist.b
        values += dist.a
    else:
        values = rng.random(shape, dtype=draw_type)
        values *= dist.b - dist.a
        values += dist.a
    return values if values.dtype == dtype else values.astype(dtype)


def batch_rows(specs: list[InputSpec], batch: int) -> int:
    """Samples per run: the batch size when some input follows it, else the inputs' fixed dim 0."""
    if any(spec.batched for spec in specs):
        return batch
    fixed = [spec.shape[0] for spec in specs if spec.shape]
    return fixed[0] if fixed else 1


def synthetic_batches(
    specs: list[InputSpec], batch: int, samples: int, dist: Distribution, seed: int
) -> Iterator[Feed]:
    """``samples`` samples in batches; ``samples`` 0: without end (the caller stops, see ``SamplingStop``)."""
    rng = np.random.default_rng(seed)
    rows = batch_rows(specs, batch)
    batched = any(spec.batched for spec in specs)
    done = 0
    while not samples or done < samples:
        size = min(rows, samples - done) if batched and samples else rows
        feed: Feed = dict(synthetic_batch(specs, size, dist, rng))  # no state carried: all arrays
        yield feed
        done += size


# --samples auto: the dead set must be unchanged over this many batches, and the firing-rate bound of
# a never-positive unit at most AUTO_TARGET_RATE (299 samples at 1%, the rules' default max_firing_rate).
AUTO_STABLE_BATCHES = 4
AUTO_TARGET_RATE = 0.01
AUTO_CONFIDENCE = 0.95
AUTO_RUN_SECONDS = 15.0  # auto never runs batches for longer than this (a sample cap by time)
AUTO_MAX_SAMPLES = 65536  # nor beyond this many samples: on a tiny model the time limit is far away


def auto_min_samples() -> int:
    """The fewest samples --samples auto draws: those that bring the bound down to its target."""
    return math.ceil(math.log(1.0 - AUTO_CONFIDENCE) / math.log1p(-AUTO_TARGET_RATE))


class SamplingStop:
    """Decides after each batch whether to draw another: the time budget, and --samples auto's rule."""

    def __init__(self, auto: bool, deadline: float | None, started: float) -> None:
        self.auto = auto
        self.deadline = deadline  # time.monotonic() after which no batch starts
        if auto:
            run_deadline = started + AUTO_RUN_SECONDS
            self.deadline = run_deadline if deadline is None else min(deadline, run_deadline)
        self.last_dead: int | None = None
        self.unchanged = 0
        self.longest_batch = 0.0
        self.batch_started = started

    def after_batch(self, samples: int, dead: int, now: float) -> str:
        """Empty to go on, else why to stop: "settled", "time" or "auto-limit"."""
        self.longest_batch = max(self.longest_batch, now - self.batch_started)
        self.batch_started = now
        self.unchanged = self.unchanged + 1 if dead == self.last_dead else 0
        self.last_dead = dead
        if self.auto:
            bound = 1.0 - (1.0 - AUTO_CONFIDENCE) ** (1.0 / max(samples, 1))
            if self.unchanged >= AUTO_STABLE_BATCHES and bound <= AUTO_TARGET_RATE:
                return "settled"
            if samples >= AUTO_MAX_SAMPLES:
                return "auto-limit"
        if self.deadline is not None and now + self.longest_batch > self.deadline:
            return "time"  # the next batch would likely end after the deadline
        return ""


def data_files(path: str) -> list[Path]:
    """The .npz/.npy files of a --data source, in name order for a folder."""
    source = Path(path)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in DATA_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"--data folder {path} holds no .npz or .npy files")
        return files
    if not source.is_file():
        raise DataError(f"--data {path}: no such file or folder")
    if source.suffix.lower() not in DATA_SUFFIXES:
        raise DataError(f"--data {path}: expected a .npz or .npy file or a folder of them")
    return [source]


def _arrays(file: Path, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    """The arrays of one data file, by input name."""
    names = [spec.name for spec in specs]
    try:
        if file.suffix.lower() == ".npy":
            if len(specs) != 1:
                raise DataError(
                    f"{file.name} is a .npy file but the model has {len(specs)} inputs ({', '.join(names)}); use a .npz with one array per input"
                )
            return {names[0]: np.load(file, mmap_mode="r", allow_pickle=False)}
        with np.load(file, allow_pickle=False) as archive:
            keys = list(archive.files)
            if len(specs) == 1 and names[0] not in keys and len(keys) == 1:
                return {names[0]: archive[keys[0]]}  # one input, one array: the name does not matter
            filled = {spec.name for spec in specs if spec.constant is not None and spec.name not in keys}
            missing = [n for n in names if n not in keys and n not in filled]
            if missing:
                raise DataError(
                    f"{file.name} has no array for the input(s) {', '.join(missing)} (it has: {', '.join(keys) or 'none'})"
                )
            arrays = {n: archive[n] for n in names if n not in filled}
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001  (corrupt archive, pickled objects, unreadable file)
        raise DataError(f"cannot read {file.name}: {' '.join(str(exc).split())[:200]}") from None
    for spec in specs:
        if spec.name in filled:
            arrays[spec.name] = _filled(file, spec, arrays)
    return arrays


def _filled(file: Path, spec: InputSpec, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """An input the file lacks whose value is a constant (an attention mask: ones), shaped like the file's
    array of the same rank (the token ids beside it)."""
    like = next((array for array in arrays.values() if array.ndim == len(spec.shape)), None)
    if like is None:
        raise DataError(f"{file.name} has no array for the input {spec.name}, nor one of its rank to shape it like")
    return np.full(like.shape, spec.constant, np.dtype(spec.dtype))


def given_once(spec: InputSpec, array: np.ndarray, specs: list[InputSpec]) -> bool:
    """An array fed whole with every batch: a scalar (a sample rate), or an input that does not follow
    the batch size stored with exactly its shape beside inputs that do."""
    if spec.batched:
        return False
    return array.ndim == 0 or (tuple(array.shape) == spec.shape and any(s.batched for s in specs))


def _sample_axis(spec: InputSpec) -> int:
    return spec.batch_axis if spec.batched else 0  # a model with a fixed batch takes its samples in rows


def _check_file(file: Path, arrays: dict[str, np.ndarray], specs: list[InputSpec]) -> tuple[int, set[str]]:
    """Samples in the file and the inputs given once; raise DataError when the arrays do not fit the inputs."""
    counts = set()
    once = set()
    for spec in specs:
        array = arrays[spec.name]
        if array.ndim != len(spec.shape):
            raise DataError(
                f"{file.name}: array '{spec.name}' has shape {list(array.shape)}, the input needs rank {len(spec.shape)} ({_dims(spec)})"
            )
        if array.dtype.kind not in "biuf":
            raise DataError(f"{file.name}: array '{spec.name}' holds {array.dtype}, not numbers")
        if given_once(spec, array, specs):
            once.add(spec.name)
            continue
        axis = _sample_axis(spec)
        others = [
            (w, a) for i, (w, a) in enumerate(zip(spec.shape, array.shape)) if i != axis and i not in spec.free_axes
        ]
        if spec.batched and any(w != a for w, a in others if w > 0):
            raise DataError(
                f"{file.name}: array '{spec.name}' has shape {list(array.shape)}, the input needs {_dims(spec)}"
            )
        counts.add(array.shape[axis])
    if len(counts) > 1:
        raise DataError(f"{file.name}: the arrays hold different numbers of samples ({sorted(counts)})")
    return (counts.pop() if counts else 0), once


def _dims(spec: InputSpec) -> str:
    dims = [str(d) for d in spec.shape]
    if spec.batched:
        dims[spec.batch_axis] = "N"
    return "x".join(dims) or "a scalar"


def data_sample_counts(specs: list[InputSpec], path: str) -> list[int] | None:
    """Samples in each data file, from the array headers only; None when a file does not say."""
    spec = next((spec for spec in specs if spec.batched and not spec.carried_from), None)
    if spec is None:
        return None
    counts = []
    for file in data_files(path):
        shape = _file_shapes(file, [s.name for s in specs]).get(spec.name)
        if not shape or len(shape) <= spec.batch_axis:
            return None
        counts.append(int(shape[spec.batch_axis]))
    return counts


def chosen_samples(counts: list[int] | None, samples: int, seed: int) -> list[np.ndarray | None]:
    """Per file, the sample indices to use: ``samples`` of them spread at random over every file
    (not the first ones: one recording, one class), in file order; None: every sample of the file."""
    if not samples or counts is None or samples >= sum(counts):
        return [None] * (len(counts) if counts is not None else 0)
    picked = np.sort(np.random.default_rng(seed).choice(sum(counts), size=samples, replace=False))
    starts = np.cumsum([0, *counts])
    return [picked[(picked >= lo) & (picked < hi)] - lo for lo, hi in zip(starts[:-1], starts[1:])]


def data_batches(specs: list[InputSpec], path: str, batch: int, samples: int, seed: int = 0) -> Iterator[Feed]:
    """Batches of real data, streamed file by file: every sample (``samples`` 0), or ``samples`` of them
    spread over the whole source when the headers say how many each file holds. Samples of another shape
    than the batch being filled (dims the model leaves dynamic) end it: each batch holds one shape."""
    rows = batch_rows(specs, batch)
    carried = [spec for spec in specs if spec.carried_from]
    if carried:  # consecutive chunks: in file order, the first ``samples`` of them
        specs = [spec for spec in specs if not spec.carried_from]
    pending: list[dict[str, np.ndarray]] = []
    pending_rows = 0
    pending_shape: tuple[tuple[int, ...], ...] | None = None
    done = 0
    files = data_files(path)
    picking = samples and not carried
    chosen = chosen_samples(data_sample_counts(specs, path) if picking else None, samples, seed)
    starts = True  # the batch being filled holds a file's first chunk: carried states start from zeros
    limit = samples or None
    once: set[str] = set()
    for index, file in enumerate(files):
        arrays = _arrays(file, specs)
        count, once = _check_file(file, arrays, specs)
        picks = chosen[index] if index < len(chosen) else None
        if picks is not None:
            picks = picks[picks < count]
        available = count if picks is None else picks.size
        shape = tuple(_sample_shape(arrays[s.name], s) for s in specs if s.name not in once)
        if pending_rows and shape != pending_shape and any(spec.batched for spec in specs):
            yield _with_states(_feed(pending, specs, once), carried, starts, pending_rows)  # a partial batch
            done += pending_rows
            pending, pending_rows, starts = [], 0, False
        pending_shape = shape
        starts = starts or bool(carried)
        start = 0
        while start < available and (limit is None or done + pending_rows < limit):
            take = min(available - start, rows - pending_rows)
            if limit is not None:
                take = min(take, limit - done - pending_rows)
            rows_taken = slice(start, start + take) if picks is None else picks[start : start + take]
            pending.append({s.name: _take(arrays[s.name], s, rows_taken, s.name in once) for s in specs})
            pending_rows += take
            start += take
            if pending_rows == rows:
                yield _with_states(_feed(pending, specs, once), carried, starts, pending_rows)
                done += pending_rows
                pending, pending_rows, starts = [], 0, False
        if limit is not None and done >= limit:
            return
    if pending_rows:
        if not any(spec.batched for spec in specs):
            return  # a model with a fixed batch cannot take a partial one
        yield _with_states(_feed(pending, specs, once), carried, starts, pending_rows)


def _with_states(feed: dict[str, np.ndarray], carried: list[InputSpec], starts: bool, rows: int) -> Feed:
    """Carried states: zeros when the batch starts a file, else None (the worker feeds the previous outputs)."""
    states = {s.name: np.zeros(with_rows(s, rows), np.dtype(s.dtype)) if starts else None for s in carried}
    return {**feed, **states}


def _sample_shape(array: np.ndarray, spec: InputSpec) -> tuple[int, ...]:
    return tuple(size for axis, size in enumerate(array.shape) if axis != _sample_axis(spec))


def _take(array: np.ndarray, spec: InputSpec, rows: slice | np.ndarray, once: bool) -> np.ndarray:
    """The chosen samples of one input's array (all of it for an input given once)."""
    if once:
        return array
    index: list[slice | np.ndarray] = [slice(None)] * array.ndim
    index[_sample_axis(spec)] = rows
    return array[tuple(index)]


def _feed(parts: list[dict[str, np.ndarray]], specs: list[InputSpec], once: set[str]) -> dict[str, np.ndarray]:
    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        chunks = [part[spec.name] for part in parts]
        if spec.name in once:
            chunks = chunks[:1]  # given once: the same array for every sample
        joined = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=_sample_axis(spec))
        feed[spec.name] = np.ascontiguousarray(joined, dtype=np.dtype(spec.dtype))
    return feed


def shapes_vary(path: str, specs: list[InputSpec]) -> bool:
    """Whether the data files hold samples of more than one shape (from the array headers only)."""
    seen = set()
    names = [spec.name for spec in specs]
    for file in data_files(path):
        shapes = _file_shapes(file, names)
        seen.add(tuple(tuple(d for a, d in enumerate(shapes.get(s.name, ())) if a != _sample_axis(s)) for s in specs))
        if len(seen) > 1:
            return True
    return False


def sample_shapes(path: str, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Each input's array shape in the first data file, read from the array headers only."""
    return _file_shapes(data_files(path)[0], names)


def _file_shapes(file: Path, names: list[str]) -> dict[str, tuple[int, ...]]:
    import zipfile

    shapes = {}
    try:
        if file.suffix.lower() == ".npy":
            with open(file, "rb") as stream:
                return {names[0]: _header_shape(stream)} if len(names) == 1 else {}
        with zipfile.ZipFile(file) as archive:
            members = {Path(m).stem: m for m in archive.namelist() if m.endswith(".npy")}
            if len(names) == 1 and names[0] not in members and len(members) == 1:
                members = {names[0]: next(iter(members.values()))}
            for name in names:
                if name in members:
                    with archive.open(members[name]) as stream:
                        shapes[name] = _header_shape(stream)
    except (zipfile.BadZipFile, OSError, ValueError):
        return {}  # the child reports what is wrong with the file
    return shapes


def _header_shape(stream: IO[bytes]) -> tuple[int, ...]:
    version = np.lib.format.read_magic(stream)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, _ = reader(stream)
    return tuple(shape)
