"""TensorProto -> numpy, without copies where the bytes allow it.

External data (and the large inline weights the loader left in the model file) is read
with plain file reads, never memory-mapped: a mapped file that shrinks while it is read
kills the process with SIGBUS, which Python cannot catch, while a short read is a clean
error for that model. The loader has already checked that the file lies inside the
model's folder; the file opened must still be the one checked (same device and inode).
Weights too large to hold are streamed in row blocks (``row_blocks``). Inline raw bytes
are viewed in place.

A tensor's dims are only believed when its data agrees with them: ``tensor_problem``
says why a tensor cannot be read (negative or oversized dims, an unknown element
type, fewer or more bytes than the dims need) without reading it, so that nobody
allocates what a hostile header declares.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from relulint.errors import ModelError
from relulint.external import element_count, external_key, location_problem, packed_bits
from relulint.lazy import onnx
from relulint.loaded import LoadedModel

if TYPE_CHECKING:
    from onnx import TensorProto


class TensorUnavailable(Exception):
    """The tensor's data cannot be read (missing external file, unsupported type, malformed)."""


@functools.cache
def typed_fields() -> dict[int, tuple[str, int]]:
    """The typed repeated field that holds a tensor's values when raw_data is not used, and how many stored
    values make one element (complex numbers store two). Every other numeric type is stored in int32_data,
    one element per value (packed types aside)."""
    types = onnx.TensorProto
    return {
        types.FLOAT: ("float_data", 1),
        types.COMPLEX64: ("float_data", 2),
        types.DOUBLE: ("double_data", 1),
        types.COMPLEX128: ("double_data", 2),
        types.INT64: ("int64_data", 1),
        types.UINT32: ("uint64_data", 1),
        types.UINT64: ("uint64_data", 1),
    }


def tensor_shape(tensor: TensorProto) -> tuple[int, ...]:
    return tuple(tensor.dims)


@functools.lru_cache(maxsize=64)  # asked for every tensor, several times each: onnx's mapping is a slow path
def element_dtype(data_type: int) -> np.dtype | None:
    """The numpy dtype of an ONNX element type; None for strings, UNDEFINED and unknown numbers."""
    if data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))
    except Exception:  # an element type this onnx does not know (a hostile or newer model)
        return None


def _numeric_dtype(tensor: TensorProto) -> np.dtype:
    """The numpy dtype of a tensor that holds numbers (``tensor_problem`` has said so)."""
    dtype = element_dtype(tensor.data_type)
    if dtype is None:
        raise TensorUnavailable(
            f"tensor '{tensor.name or '<unnamed>'}' has the unknown element type {tensor.data_type}"
        )
    return dtype


def tensor_problem(tensor: TensorProto, loaded: LoadedModel | None = None) -> str | None:
    """Why the tensor's values cannot be read, or None when its data agrees with its dims and type."""
    if loaded is None:
        return _tensor_problem(tensor, None)
    known = loaded.tensor_problems.get(id(tensor))
    if known is not None and known[0] is tensor:
        return known[1]
    problem = _tensor_problem(tensor, loaded)
    loaded.tensor_problems[id(tensor)] = (tensor, problem)
    return problem


def _tensor_problem(tensor: TensorProto, loaded: LoadedModel | None) -> str | None:
    name = tensor.name or "<unnamed>"
    count = element_count(tensor)
    if count is None:
        return f"tensor '{name}' has the negative dimensions {list(tensor.dims)}"
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return f"tensor '{name}' holds no numbers"
    if element_dtype(tensor.data_type) is None:
        return f"tensor '{name}' has the unknown element type {tensor.data_type}"
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        if loaded is None:
            return None
        key = external_key(tensor)
        if key in loaded.unavailable:
            return loaded.unavailable[key]
        if key[1] in loaded.external_files:
            # The loader's gate checked this location already (resolving it costs a system call per path
            # component, per tensor); ``_ExternalFile`` checks that the file opened is still the one it checked.
            return None
        refusal = location_problem(loaded.base_dir.resolve(), key[1])
        return f"external data of tensor '{name}' {refusal}" if refusal else None
    needed, stored, unit = _needed_and_stored(tensor, count)
    if needed != stored:
        return f"tensor '{name}' has {stored} {unit} of data but its dims {list(tensor.dims)} need {needed}"
    return None


def _needed_and_stored(tensor: TensorProto, count: int) -> tuple[int, int, str]:
    """(needed, stored, unit): the data the dims call for against what the tensor holds."""
    bits = packed_bits().get(tensor.data_type)
    if tensor.HasField("raw_data"):
        itemsize = _numeric_dtype(tensor).itemsize
        needed = (count * bits + 7) // 8 if bits else count * itemsize
        return needed, len(tensor.raw_data), "bytes"
    field, per_element = typed_fields().get(tensor.data_type, ("int32_data", 1))
    stored = len(getattr(tensor, field))
    if bits:  # packed types store several elements per int32 value
        per_value = 8 // bits
        return (count + per_value - 1) // per_value, stored, "values"
    return count * per_element, stored, "values"


def read_tensor(tensor: TensorProto, loaded: LoadedModel) -> np.ndarray:
    """The tensor's values as a (possibly read-only, memory-mapped) numpy array."""
    problem = tensor_problem(tensor, loaded)
    if problem:
        raise TensorUnavailable(problem)
    shape = tensor_shape(tensor)
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return _read_external(tensor, loaded, shape)
    if tensor.HasField("raw_data") and tensor.data_type not in packed_bits():
        dtype = _numeric_dtype(tensor)
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(shape)
    try:
        return onnx.numpy_helper.to_array(tensor)
    except Exception as exc:
        raise TensorUnavailable(f"tensor '{tensor.name}' cannot be read: {' '.join(str(exc).split())[:150]}") from None


# A tensor read whole from a file may be at most this large: a larger one (a 4 GB sparse weight in a file
# of a few KB) is streamed by ``row_blocks`` where its statistics are computed, and is otherwise unknown.
MAX_WHOLE_READ_BYTES = 512 * 1024**2
BLOCK_BYTES = 16 * 1024**2  # one block of ``row_blocks``: large enough that numpy's per-call cost vanishes


def _read_external(tensor: TensorProto, loaded: LoadedModel, shape: tuple[int, ...]) -> np.ndarray:
    dtype = _numeric_dtype(tensor)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dtype.itemsize > MAX_WHOLE_READ_BYTES:
        raise TensorUnavailable(
            f"tensor '{tensor.name}' holds {count * dtype.itemsize:,} bytes, over the "
            f"{MAX_WHOLE_READ_BYTES:,} read whole"
        )
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    with _ExternalFile(tensor, loaded) as source:
        return source.read(0, np.empty(count, dtype=dtype)).reshape(shape)


def row_blocks(
    tensor: TensorProto, loaded: LoadedModel, rows: int, block_bytes: int = BLOCK_BYTES
) -> Iterator[np.ndarray]:
    """The tensor's values seen as a C-order ``[rows, count / rows]`` matrix, in blocks of consecutive rows of
    at most ``block_bytes`` (one row at least), so that a weight of any size costs one block of memory.

    ``rows`` must divide the tensor's element count. Raises ``TensorUnavailable`` as ``read_tensor`` does,
    and ``ModelError`` when an external file changes while it is read. Blocks read from a file share one
    buffer, which later reads of the same thread reuse: each block is overwritten by the next (copy what must
    outlive it).
    """
    problem = tensor_problem(tensor, loaded)
    if problem:
        raise TensorUnavailable(problem)
    count = element_count(tensor) or 0
    columns = count // rows if rows else 0
    if not count or rows * columns != count:
        return
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        matrix = read_tensor(tensor, loaded).reshape(rows, columns)  # in memory already: views of it
        step = max(1, block_bytes // max(1, columns * matrix.dtype.itemsize))
        for first in range(0, rows, step):
            yield matrix[first : first + step]
        return
    dtype = _numeric_dtype(tensor)
    step = max(1, block_bytes // max(1, columns * dtype.itemsize))
    scratch = _SCRATCH.take(min(step, rows) * columns * dtype.itemsize)
    try:
        buffer = scratch.view(dtype)
        with _ExternalFile(tensor, loaded) as source:
            for first in range(0, rows, step):
                taken = min(step, rows - first)
                yield source.read(first * columns, buffer[: taken * columns]).reshape(taken, columns)
    finally:
        _SCRATCH.give(scratch)


class _ScratchBuffers(threading.local):
    """Read buffers kept for the next tensor of the same thread: memory fresh from the system costs a page
    fault and a page cleared for each 4 KB, about as much as reading the bytes into it (0.1 s for the 100 MB
    of the ResNet-50 shape's weights). A buffer is lent to one reader at a time, so two readers alive at once
    never share one."""

    def __init__(self) -> None:
        self.free: list[np.ndarray] = []

    def take(self, nbytes: int) -> np.ndarray:
        for index, buffer in enumerate(self.free):
            if buffer.size >= nbytes:
                return self.free.pop(index)[:nbytes]
        # As large as a block from the start (pages untouched cost nothing), so later tensors fit in it.
        return np.empty(max(nbytes, BLOCK_BYTES), dtype=np.uint8)[:nbytes]

    def give(self, buffer: np.ndarray) -> None:
        whole = buffer.base if isinstance(buffer.base, np.ndarray) else buffer  # the slice's whole buffer
        if len(self.free) < KEPT_SCRATCH_BUFFERS and whole.size <= KEPT_SCRATCH_BYTES:
            self.free.append(whole)
            self.free.sort(key=len)


KEPT_SCRATCH_BUFFERS = 2  # per thread
KEPT_SCRATCH_BYTES = 2 * BLOCK_BYTES  # a larger one (a single row over a block) is returned to the system
_SCRATCH = _ScratchBuffers()


class _ExternalFile:
    """One tensor's external file, opened for reads of its elements.

    The file must still be the one the loader checked (same device and inode) and hold the tensor's bytes;
    a file replaced, truncated before or during a read ends this model's analysis with a ``ModelError``
    (exit 2), instead of the SIGBUS that reading a truncated memory map raises.
    """

    def __init__(self, tensor: TensorProto, loaded: LoadedModel) -> None:
        name, location, offset = external_key(tensor)
        self.loaded, self.location = loaded, location
        self.name = name or "<unnamed>"
        self.offset = int(offset or 0)
        self.dtype = _numeric_dtype(tensor)
        self.end = self.offset + (element_count(tensor) or 0) * self.dtype.itemsize
        checked = loaded.external_files.get(location)
        if checked is None:  # the loader's gate records every file it lets through
            raise TensorUnavailable(f"external data of tensor '{self.name}' ({location}) was not checked")
        try:
            self.stream = open(checked.path, "rb", buffering=0)  # noqa: SIM115 - closed by __exit__
        except OSError as exc:
            raise self._changed(f"cannot be opened any more ({exc.strerror or exc})") from None
        info = os.fstat(self.stream.fileno())
        if (info.st_dev, info.st_ino) != (checked.device, checked.inode):
            self.stream.close()
            raise self._changed("was replaced by another file")
        if info.st_size < self.end:
            self.stream.close()
            raise self._truncated(info.st_size)

    def __enter__(self) -> _ExternalFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stream.close()

    def read(self, first: int, values: np.ndarray) -> np.ndarray:
        """``values``, filled with the tensor's elements from ``first`` on (as many as it holds)."""
        buffer = values.view(np.uint8).data  # bytes: a buffer of bfloat16 or float8 has no format
        position = self.offset + first * self.dtype.itemsize
        done = 0
        self.stream.seek(position)
        while done < len(buffer):
            got = self.stream.readinto(buffer[done:])
            if not got:  # the file shrank after it was measured
                raise self._truncated(os.fstat(self.stream.fileno()).st_size)
            done += got
        return values

    def _truncated(self, size: int) -> ModelError:
        return self._changed(
            f"was truncated while relulint read it: it has {size:,} bytes, tensor '{self.name}' needs bytes "
            f"{self.offset:,}..{self.end:,}"
        )

    def _changed(self, what: str) -> ModelError:
        inline = self.location == self.loaded.inline_location  # the model's own large weights (relulint.wire)
        file = "the model file" if inline else f"the external data file '{self.location}'"
        return ModelError(self.loaded.path, f"{file} {what}")


def as_float(array: np.ndarray) -> np.ndarray:
    """A float view for statistics: float32 for narrow floats and integers, float64 kept."""
    if array.dtype in (np.float32, np.float64):
        return array
    if np.iscomplexobj(array):
        return np.asarray(array.real, dtype=np.float32)
    return np.asarray(array, dtype=np.float32)
