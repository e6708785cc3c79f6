"""The external-data gate: every tensor that can carry data outside the model file, and the one check
each of them passes before anything reads it.

A location outside the model's folder (absolute, ``..``, a symbolic link leaving it) or an
``external_data`` list with a repeated key refuses the model; a missing or short file is noted and that
tensor skipped. The files that pass are recorded in ``LoadedModel.external_files``: the only ones
``relulint.tensors`` reads and the probe links into its folder.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from relulint.errors import ModelError, one_line
from relulint.findings import Note
from relulint.lazy import onnx
from relulint.loaded import CheckedFile, LoadedModel

if TYPE_CHECKING:
    from onnx import TensorProto


@functools.cache
def packed_bits() -> dict[int, int]:
    """Element types stored several to a byte (type -> bits per element): their bytes cannot be
    memory-mapped one element per byte group. Those this onnx knows (a function: onnx loads lazily)."""
    names = (
        ("INT4", 4),
        ("UINT4", 4),
        ("FLOAT4E2M1", 4),
        ("INT2", 2),
        ("UINT2", 2),
        ("FLOAT6E2M3", 6),
        ("FLOAT6E3M2", 6),
    )
    return {getattr(onnx.TensorProto, name): bits for name, bits in names if hasattr(onnx.TensorProto, name)}


def iter_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor that can hold data, wherever ONNX allows one: initializers, the values and indices of
    sparse initializers, tensor and sparse-tensor attributes (single and lists, so Constant's ``value`` and
    ``sparse_value`` too), in the main graph, every subgraph, the training_info graphs and the bodies of
    model-local functions (which stay when they could not be inlined). The external-data gate
    (``check_external_data``) walks this, so a carrier missing here would be a way around it."""
    stack: list[onnx.GraphProto | onnx.FunctionProto] = [model.graph, *model.functions]
    for training in model.training_info:
        stack.extend((training.initialization, training.algorithm))
    while stack:
        current = stack.pop()
        if isinstance(current, onnx.GraphProto):
            yield from current.initializer
            for sparse in current.sparse_initializer:
                yield sparse.values
                yield sparse.indices
        for node in current.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors
                elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices
                elif attr.type == onnx.AttributeProto.SPARSE_TENSORS:
                    for sparse in attr.sparse_tensors:
                        yield sparse.values
                        yield sparse.indices
                elif attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


def element_count(tensor: TensorProto) -> int | None:
    """Elements the tensor's dims declare; None when a dim is negative (a malformed tensor)."""
    count = 1
    for dim in tensor.dims:
        if dim < 0:
            return None
        count *= dim
    return count


def expected_nbytes(tensor: TensorProto) -> int | None:
    if tensor.data_type in packed_bits() or tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    count = element_count(tensor)
    if count is None:
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        return None
    return count * itemsize


def external_key(tensor: TensorProto) -> tuple[str, str, str]:
    entries = {entry.key: entry.value for entry in tensor.external_data}
    return (tensor.name, entries.get("location", ""), entries.get("offset", "0"))


def duplicate_external_key(tensor: TensorProto) -> str | None:
    """A key that the tensor's ``external_data`` list holds more than once, or None.

    Readers disagree on which of two ``location`` entries counts (a dict keeps the last, others the
    first), so a list with a checked location and a hostile one would pass one reader's check and
    send another reader elsewhere: such a list is refused outright.
    """
    seen: set[str] = set()
    for entry in tensor.external_data:
        if entry.key in seen:
            return entry.key
        seen.add(entry.key)
    return None


MAX_EXTERNAL_NOTES = 20  # a hostile model may mark thousands of tensors external


def check_external_data(loaded: LoadedModel) -> None:
    """The one gate for external data: every tensor ``iter_tensors`` yields passes here.

    A location outside the model's folder or an ``external_data`` list with a repeated key refuses the
    model; a missing or short file is noted and that tensor is skipped. Files that pass are recorded in
    ``loaded.external_files``, the only ones the probe links into its folder.
    """
    real_base = loaded.base_dir.resolve()
    resolved: dict[str, str | Path] = {}  # location -> the file, or why it is refused: resolved once
    for tensor in iter_tensors(loaded.model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        name = tensor.name or "<unnamed>"
        repeated = duplicate_external_key(tensor)
        if repeated is not None:
            raise ModelError(loaded.path, f"external data of tensor '{name}' names the key '{repeated}' twice")
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        if not location:
            loaded.unavailable[external_key(tensor)] = f"tensor '{name}' is marked external but names no file"
            continue
        if location not in resolved:
            refusal = location_problem(real_base, location)
            resolved[location] = refusal if refusal else (real_base / location).resolve()
        file = resolved[location]
        if isinstance(file, str):
            raise ModelError(loaded.path, f"external data of tensor '{name}' {file}")
        problem = _external_problem(tensor, file, entries)
        if problem:
            loaded.unavailable[external_key(tensor)] = f"external data of tensor '{name}' ({location}) {problem}"
        elif location not in loaded.external_files:
            try:
                info = file.stat()
            except OSError:  # removed since the line above
                loaded.unavailable[external_key(tensor)] = f"external data of tensor '{name}' ({location}) is missing"
                continue
            loaded.external_files[location] = CheckedFile(file, info.st_dev, info.st_ino, info.st_size)
    reasons = list(loaded.unavailable.values())
    for reason in reasons[:MAX_EXTERNAL_NOTES]:
        loaded.notes.append(Note("skipped", f"{reason}; statistics of that tensor are skipped"))
    if len(reasons) > MAX_EXTERNAL_NOTES:
        loaded.notes.append(
            Note("skipped", f"{len(reasons) - MAX_EXTERNAL_NOTES} more external tensors are unavailable too")
        )


def location_problem(real_base: Path, location: str) -> str | None:
    """Why an external-data location may not be read, or None when it names a path inside ``real_base``.

    ``real_base`` is the model's folder, already resolved. Used by the loader (which refuses the model)
    and again by ``relulint.tensors`` before it maps a file, so no path escapes either check.
    """
    if "\0" in location:
        return f"has a location with a NUL character ('{location}')"
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location[:3]:
        return (
            f"has the absolute location '{location}'; "
            "relulint only reads external data from files inside the model's folder"
        )
    if ".." in Path(os.path.normpath(location.replace("\\", "/"))).parts:
        return f"at '{location}' climbs out of the model's folder"
    try:
        real_target = (real_base / location).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symbolic-link loop, an over-long name
        return f"at '{location}' cannot be resolved ({one_line(exc)})"
    if not real_target.is_relative_to(real_base):
        return f"at '{location}' leaves the model's folder through a symbolic link"
    return None


def _external_problem(tensor: TensorProto, file: Path, entries: dict[str, str]) -> str | None:
    try:
        mode = file.stat().st_mode
    except OSError:
        return "is missing"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    try:
        offset = int(entries.get("offset", 0) or 0)
        length = int(entries["length"]) if entries.get("length") else None
    except ValueError:
        return "has an offset or length that is not a number"
    if element_count(tensor) is None:
        return f"has the negative dimensions {list(tensor.dims)}"
    expected = expected_nbytes(tensor)
    if expected is None:
        return "has an element type relulint cannot memory-map"
    if length is not None and length != expected:
        return f"declares {length} bytes but its shape needs {expected}"
    size = file.stat().st_size
    if offset < 0 or offset + expected > size:
        return f"needs bytes {offset}..{offset + expected} but the file has {size}"
    return None
