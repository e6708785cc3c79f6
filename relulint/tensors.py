"""TensorProto -> numpy, without copies where the bytes allow it.

External data is memory-mapped (the loader has already checked that the file lies
inside the model's folder); inline raw bytes are viewed in place.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from relulint.loader import PACKED_TYPES, LoadedModel, external_key


class TensorUnavailable(Exception):
    """The tensor's data cannot be read (missing external file, unsupported type)."""


def tensor_shape(tensor: TensorProto) -> tuple[int, ...]:
    return tuple(tensor.dims)


def read_tensor(tensor: TensorProto, loaded: LoadedModel) -> np.ndarray:
    """The tensor's values as a (possibly read-only, memory-mapped) numpy array."""
    shape = tensor_shape(tensor)
    if tensor.data_location == TensorProto.EXTERNAL:
        return _read_external(tensor, loaded, shape)
    if tensor.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        raise TensorUnavailable(f"tensor '{tensor.name}' holds no numbers")
    if tensor.HasField("raw_data") and tensor.data_type not in PACKED_TYPES:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        raw = tensor.raw_data
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if len(raw) != count * dtype.itemsize:
            raise TensorUnavailable(
                f"tensor '{tensor.name}' has {len(raw)} bytes of data but its shape needs {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:
        raise TensorUnavailable(f"tensor '{tensor.name}' cannot be read: {' '.join(str(exc).split())[:150]}") from None


def _read_external(tensor: TensorProto, loaded: LoadedModel, shape: tuple[int, ...]) -> np.ndarray:
    key = external_key(tensor)
    if key in loaded.unavailable:
        raise TensorUnavailable(loaded.unavailable[key])
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    file = (loaded.base_dir / key[1]).resolve()
    offset = int(key[2] or 0)
    if 0 in shape:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape or (1,)).reshape(shape)


def as_float(array: np.ndarray) -> np.ndarray:
    """A float view for statistics: float32 for narrow floats and integers, float64 kept."""
    if array.dtype in (np.float32, np.float64):
        return array
    return np.asarray(array, dtype=np.float32)
