"""Convolution and pooling in numpy float64, as ONNX defines them.

The bound propagation needs these ops on float64 arrays with any number of leading axes (the symbolic
bounds carry one row per input variable in front of the batch axis), which onnxruntime does not offer.
Each kernel loops over the kernel offsets and contracts the channels with ``einsum``, so its memory is
the size of its output, not of an unfolded input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import EllipsisType

import numpy as np


@dataclass(frozen=True)
class Window:
    """Geometry of a sliding window over the spatial axes (convolution or pooling)."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def extent(self) -> tuple[int, ...]:
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))


def window(
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int] | None,
    dilations: Sequence[int] | None,
    pads: Sequence[int] | None,
    auto_pad: str = "NOTSET",
    ceil_mode: bool = False,
) -> Window:
    """The output size and padding of a window op (ONNX Conv / MaxPool / AveragePool rules)."""
    n = len(spatial)
    strides = tuple(strides or [1] * n)
    dilations = tuple(dilations or [1] * n)
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [math.ceil(size / s) for size, s in zip(spatial, strides)]
        total = [max(0, (o - 1) * s + e - size) for o, s, e, size in zip(out, strides, extent, spatial)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        first, last = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return Window(tuple(kernel), strides, dilations, tuple(first), tuple(last), tuple(out))
    if auto_pad == "VALID" or not pads:
        pads = [0] * (2 * n)
    begin, end = tuple(pads[:n]), tuple(pads[n:])
    out = []
    for size, s, e, b, f in zip(spatial, strides, extent, begin, end):
        span = size + b + f - e
        count = (math.ceil(span / s) if ceil_mode else span // s) + 1
        if ceil_mode and (count - 1) * s >= size + b:
            count -= 1  # the last window would start in the end padding
        out.append(max(count, 0))
    return Window(tuple(kernel), strides, dilations, begin, end, tuple(out))


def _padded(x: np.ndarray, geometry: Window, value: float) -> np.ndarray:
    """Pad the trailing spatial axes, with room for ceil-mode windows that run past the end."""
    n = len(geometry.kernel)
    widths = [(0, 0)] * (x.ndim - n)
    for axis, (b, f, o, s, e) in enumerate(
        zip(geometry.pads_begin, geometry.pads_end, geometry.out, geometry.strides, geometry.extent)
    ):
        size = x.shape[x.ndim - n + axis]
        needed = (o - 1) * s + e if o > 0 else 0
        widths.append((b, max(f, needed - size - b)))
    return np.pad(x, widths, constant_values=value)


def _offset_slices(geometry: Window, offset: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(k * d, k * d + s * (o - 1) + 1, s)
        for k, d, s, o in zip(offset, geometry.dilations, geometry.strides, geometry.out)
    )


def _trailing(spatial: tuple[slice, ...], skipped: int = 0) -> tuple[EllipsisType | slice, ...]:
    """The index that takes ``spatial`` on the last axes, after ``skipped`` whole axes before them."""
    return (..., *[slice(None)] * skipped, *spatial)


def conv(x: np.ndarray, w: np.ndarray, geometry: Window, group: int) -> np.ndarray:
    """ONNX Conv without bias. x: [..., C, *spatial], w: [M, C/group, *kernel] -> [..., M, *out]."""
    n = w.ndim - 2
    lead = x.shape[: x.ndim - n - 1]
    channels = x.shape[x.ndim - n - 1]
    m = w.shape[0]
    xp = _padded(x, geometry, 0.0)
    xg = xp.reshape(*lead, group, channels // group, *xp.shape[x.ndim - n :])
    wg = w.reshape(group, m // group, channels // group, *w.shape[2:])
    out = np.zeros((*lead, group, m // group, *geometry.out))
    if 0 in geometry.out:
        return out.reshape(*lead, m, *geometry.out)
    axes = "".join(chr(ord("p") + i) for i in range(n))  # spatial letters p, q, r
    for offset in np.ndindex(*geometry.kernel):
        patch = xg[_trailing(_offset_slices(geometry, offset), 2)]
        out += np.einsum(f"...gc{axes},gmc->...gm{axes}", patch, wg[(slice(None), slice(None), slice(None), *offset)])
    return out.reshape(*lead, m, *geometry.out)


@dataclass(frozen=True)
class TransposeGeometry:
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    output_padding: tuple[int, ...]


def conv_transpose(x: np.ndarray, w: np.ndarray, geometry: TransposeGeometry, group: int) -> np.ndarray:
    """ONNX ConvTranspose without bias. x: [..., C, *in], w: [C, M/group, *kernel] -> [..., M, *out]."""
    n = w.ndim - 2
    lead = x.shape[: x.ndim - n - 1]
    channels = x.shape[x.ndim - n - 1]
    spatial = x.shape[x.ndim - n :]
    per_group = w.shape[1]
    kernel = w.shape[2:]
    full = [
        s * (size - 1) + (k - 1) * d + 1 + p
        for s, size, k, d, p in zip(geometry.strides, spatial, kernel, geometry.dilations, geometry.output_padding)
    ]
    xg = x.reshape(*lead, group, channels // group, *spatial)
    wg = w.reshape(group, channels // group, per_group, *kernel)
    buffer = np.zeros((*lead, group, per_group, *full))
    axes = "".join(chr(ord("p") + i) for i in range(n))
    for offset in np.ndindex(*kernel):
        contribution = np.einsum(
            f"...gc{axes},gcm->...gm{axes}", xg, wg[(slice(None), slice(None), slice(None), *offset)]
        )
        target = tuple(
            slice(k * d, k * d + s * (size - 1) + 1, s)
            for k, d, s, size in zip(offset, geometry.dilations, geometry.strides, spatial)
        )
        buffer[_trailing(target, 2)] += contribution
    crop = tuple(slice(b, f - e) for b, e, f in zip(geometry.pads_begin, geometry.pads_end, full))
    out = buffer[_trailing(crop, 2)]
    return out.reshape(*lead, group * per_group, *out.shape[len(lead) + 2 :])


def max_pool(x: np.ndarray, geometry: Window) -> np.ndarray:
    """ONNX MaxPool over the trailing spatial axes (padding never wins a max)."""
    xp = _padded(x, geometry, -np.inf)
    out = np.full((*x.shape[: x.ndim - len(geometry.kernel)], *geometry.out), -np.inf)
    for offset in np.ndindex(*geometry.kernel):
        np.maximum(out, xp[_trailing(_offset_slices(geometry, offset))], out=out)
    return out


def window_sum(x: np.ndarray, geometry: Window) -> np.ndarray:
    """Sum over each window, padding counted as zeros."""
    xp = _padded(x, geometry, 0.0)
    out = np.zeros((*x.shape[: x.ndim - len(geometry.kernel)], *geometry.out))
    for offset in np.ndindex(*geometry.kernel):
        out += xp[_trailing(_offset_slices(geometry, offset))]
    return out


def window_counts(spatial: Sequence[int], geometry: Window) -> tuple[np.ndarray, np.ndarray]:
    """(elements of the input, elements of input plus explicit padding) in each window."""
    inside = window_sum(np.ones(tuple(spatial)), geometry)
    padded_shape = tuple(s + b + e for s, b, e in zip(spatial, geometry.pads_begin, geometry.pads_end))
    shifted = Window(
        geometry.kernel, geometry.strides, geometry.dilations, (0,) * len(spatial), (0,) * len(spatial), geometry.out
    )
    with_pads = window_sum(np.ones(padded_shape), shifted)
    return inside, with_pads
