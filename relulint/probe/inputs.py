"""What the probe feeds the model: synthetic batches or batches streamed from data files.

This module runs in the probe's child process, so it imports numpy only (no onnx, no
relulint core). The parent describes each model input as an ``InputSpec``; the child
turns specs into batches with ``synthetic_batches`` or ``data_batches``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_SUFFIXES = (".npz", ".npy")


class DataError(Exception):
    """The --data source cannot feed this model; the message says why, in one line."""


@dataclass(frozen=True)
class InputSpec:
    """One model input as the probe fills it."""

    name: str
    dtype: str  # numpy dtype name, e.g. "float32", "int64", "bool"
    shape: tuple[int, ...]  # one batch, every dim concrete
    batched: bool  # dim 0 follows the probe's batch size (it is dynamic in the model)
    int_high: int = 2  # integers are drawn from [0, int_high): a Gather's table size when it feeds one
    channel_axis: int | None = None  # axis whose per-channel statistics RL505 reads, None: not collected


@dataclass(frozen=True)
class Distribution:
    kind: str  # "normal" or "uniform"
    a: float  # mean or low
    b: float  # std or high

    def describe(self) -> str:
        if self.kind == "normal":
            return f"normal(mean {self.a:g}, std {self.b:g})"
        return f"uniform({self.a:g}, {self.b:g})"


def parse_distribution(text: str) -> Distribution:
    """``normal``, ``normal:MEAN,STD`` or ``uniform:LOW,HIGH`` (the config has checked the form)."""
    kind, _, args = text.partition(":")
    if kind == "normal" and not args:
        return Distribution("normal", 0.0, 1.0)
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
        shape = (rows, *spec.shape[1:]) if spec.batched else spec.shape
        dtype = np.dtype(spec.dtype)
        if dtype == np.bool_:
            feed[spec.name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            feed[spec.name] = rng.integers(0, max(spec.int_high, 1), size=shape).astype(dtype)
        else:
            feed[spec.name] = _floats(shape, dtype, dist, rng)
    return feed


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
) -> Iterator[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    rows = batch_rows(specs, batch)
    batched = any(spec.batched for spec in specs)
    done = 0
    while done < samples:
        size = min(rows, samples - done) if batched else rows
        yield synthetic_batch(specs, size, dist, rng)
        done += size


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
            missing = [n for n in names if n not in keys]
            if missing:
                raise DataError(
                    f"{file.name} has no array for the input(s) {', '.join(missing)} (it has: {', '.join(keys) or 'none'})"
                )
            return {n: archive[n] for n in names}
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001  (corrupt archive, pickled objects, unreadable file)
        raise DataError(f"cannot read {file.name}: {' '.join(str(exc).split())[:200]}") from None


def _check_file(file: Path, arrays: dict[str, np.ndarray], specs: list[InputSpec]) -> int:
    """Samples in the file; raise DataError when the arrays do not fit the inputs."""
    counts = set()
    for spec in specs:
        array = arrays[spec.name]
        if array.ndim != len(spec.shape):
            raise DataError(
                f"{file.name}: array '{spec.name}' has shape {list(array.shape)}, the input needs rank {len(spec.shape)} ({_dims(spec)})"
            )
        wanted = spec.shape[1:]
        if spec.batched and any(w != a for w, a in zip(wanted, array.shape[1:]) if w > 0):
            raise DataError(
                f"{file.name}: array '{spec.name}' has shape {list(array.shape)}, the input needs {_dims(spec)}"
            )
        if array.dtype.kind not in "biuf":
            raise DataError(f"{file.name}: array '{spec.name}' holds {array.dtype}, not numbers")
        counts.add(array.shape[0])
    if len(counts) > 1:
        raise DataError(f"{file.name}: the arrays hold different numbers of samples ({sorted(counts)})")
    return counts.pop() if counts else 0


def _dims(spec: InputSpec) -> str:
    return "x".join(["N", *map(str, spec.shape[1:])]) if spec.batched else "x".join(map(str, spec.shape))


def data_batches(specs: list[InputSpec], path: str, batch: int, samples: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of real data, streamed file by file; at most ``samples`` samples in all."""
    rows = batch_rows(specs, batch)
    pending: list[dict[str, np.ndarray]] = []
    pending_rows = 0
    done = 0
    for file in data_files(path):
        arrays = _arrays(file, specs)
        count = _check_file(file, arrays, specs)
        start = 0
        while start < count and done + pending_rows < samples:
            take = min(count - start, rows - pending_rows, samples - done - pending_rows)
            pending.append({n: a[start : start + take] for n, a in arrays.items()})
            pending_rows += take
            start += take
            if pending_rows == rows:
                yield _feed(pending, specs)
                done += pending_rows
                pending, pending_rows = [], 0
        if done >= samples:
            return
    if pending_rows:
        if not any(spec.batched for spec in specs):
            return  # a model with a fixed batch cannot take a partial one
        yield _feed(pending, specs)


def _feed(parts: list[dict[str, np.ndarray]], specs: list[InputSpec]) -> dict[str, np.ndarray]:
    feed = {}
    for spec in specs:
        chunks = [part[spec.name] for part in parts]
        joined = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)
        feed[spec.name] = np.ascontiguousarray(joined, dtype=np.dtype(spec.dtype))
    return feed


def sample_shapes(path: str, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Each input's array shape in the first data file, read from the array headers only."""
    file = data_files(path)[0]
    if file.suffix.lower() == ".npy":
        with open(file, "rb") as stream:
            return {names[0]: _header_shape(stream)} if len(names) == 1 else {}
    import zipfile

    shapes = {}
    try:
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


def _header_shape(stream) -> tuple[int, ...]:
    version = np.lib.format.read_magic(stream)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, _ = reader(stream)
    return tuple(shape)
