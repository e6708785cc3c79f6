"""TensorProto -> numpy, without copies where the bytes allow it.

External data is memory-mapped (the loader has already checked that the file lies
inside the model's folder, and the check is repeated before mapping); inline raw
bytes are viewed in place.

A tensor's dims are only believed when its data agrees with them: ``tensor_problem``
says why a tensor cannot be read (negative or oversized dims, an unknown element
type, fewer or more bytes than the dims need) without reading it, so that nobody
allocates what a hostile header declares.
"""

from __future__ import annotations

import functools
import mmap
import weakref
from typing import TYPE_CHECKING

import numpy as np

from relulint.lazy import onnx
from relulint.loader import LoadedModel, element_count, external_key, location_problem, packed_bits

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


def element_dtype(data_type: int) -> np.dtype | None:
    """The numpy dtype of an ONNX element type; None for strings, UNDEFINED and unknown numbers."""
    if data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))
    except Exception:  # an element type this onnx does not know (a hostile or newer model)
        return None


def tensor_problem(tensor: TensorProto, loaded: LoadedModel | None = None) -> str | None:
    """Why the tensor's values cannot be read, or None when its data agrees with its dims and type."""
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
        itemsize = element_dtype(tensor.data_type).itemsize
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
        dtype = element_dtype(tensor.data_type)
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(shape)
    try:
        return onnx.numpy_helper.to_array(tensor)
    except Exception as exc:
        raise TensorUnavailable(f"tensor '{tensor.name}' cannot be read: {' '.join(str(exc).split())[:150]}") from None


def _read_external(tensor: TensorProto, loaded: LoadedModel, shape: tuple[int, ...]) -> np.ndarray:
    key = external_key(tensor)
    dtype = element_dtype(tensor.data_type)
    if 0 in shape:
        return np.zeros(shape, dtype=dtype)
    file = (loaded.base_dir / key[1]).resolve()
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    try:
        offset = int(key[2] or 0)
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        with open(file, "rb") as stream:
            mapped = mmap.mmap(
                stream.fileno(), offset - start + count * dtype.itemsize, access=mmap.ACCESS_READ, offset=start
            )
    except (OSError, ValueError, OverflowError) as exc:  # the file changed since loading
        raise TensorUnavailable(f"external data of tensor '{tensor.name}' cannot be mapped ({exc})") from None
    _MAPPINGS.append(weakref.ref(mapped))
    return np.frombuffer(mapped, dtype=dtype, count=count, offset=offset - start).reshape(shape)


def is_mapped(array: np.ndarray) -> bool:
    """Whether the array's values are read from a memory-mapped file (not copied into memory)."""
    owner: object = array
    while isinstance(owner, (np.ndarray, memoryview)):
        owner = owner.base if isinstance(owner, np.ndarray) else owner.obj
    return isinstance(owner, mmap.mmap)


# Every mapping still alive, so that its pages can be dropped from the resident set on request.
_MAPPINGS: list[weakref.ref[mmap.mmap]] = []


def release_mapped_pages() -> None:
    """Drop the pages of memory-mapped weights from the resident set (they are read again on use).

    The weight statistics read every weight once; the probe's child then runs for seconds, and
    the parent has no need to keep a second resident copy of the weights meanwhile.
    """
    alive = []
    for reference in _MAPPINGS:
        mapped = reference()
        if mapped is None or mapped.closed:
            continue
        alive.append(reference)
        if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            try:
                mapped.madvise(mmap.MADV_DONTNEED)
            except OSError:
                pass
    _MAPPINGS[:] = alive


def as_float(array: np.ndarray) -> np.ndarray:
    """A float view for statistics: float32 for narrow floats and integers, float64 kept."""
    if array.dtype in (np.float32, np.float64):
        return array
    if np.iscomplexobj(array):
        return np.asarray(array.real, dtype=np.float32)
    return np.asarray(array, dtype=np.float32)
