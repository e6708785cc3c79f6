"""Structured synthetic inputs: data-free samples that vary between samples the way real ones do.

Independent noise per element is the wrong null model for a network with global pooling: the mean of
50,000 i.i.d. values is almost the same for every sample, so a squeeze-excitation gate after the pool sees
one value and each of its units looks permanently on or off. Real images and sounds differ between
samples in their *global* statistics (brightness, contrast, loudness, pitch) and are correlated in space
or time. These generators give each sample its own global statistics and a correlated structure:

- ``smooth``: spatially (or temporally) smooth noise, coarse Gaussian noise upsampled bilinearly, whose
  correlation length, brightness and contrast are drawn per sample;
- ``strokes``: a page: a bright background with dark strokes, lines and text-like marks, sparse
  and of random count, thickness and ink (what OCR and document models see);
- ``harmonic``: audio: a few harmonics of a random pitch under an on/off envelope, with a little noise
  (what speech and voice-activity models see);
- ``structured`` (the default): half of each batch ``smooth``, half the kind made for the input's layout
  (``strokes`` for images, ``harmonic`` for signals); ``smooth`` alone for other inputs. A unit that fires
  on either half is alive, so the mix calls fewer units dead than either kind alone would; on the
  project's corpus of real models (bench/corpus.py, README "False alarms on real models") it gave the
  fewest false-dead units of the data-free inputs measured.

Each maps into the input's domain [low, high] (``--input-range``, or -1..1). Images are taken as
NCHW when axis 1 is 1, 3 or 4 channels, else NHWC when the last axis is; a 2-D [batch, time] or 3-D
[batch, channels, time] input at least MIN_SIGNAL long is a signal. An input of another shape gets ``smooth`` along its last axes.
numpy only: this runs in the probe's child, which imports nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

KINDS = ("structured", "smooth", "strokes", "harmonic")
NAMES = {  # for messages
    "structured": "structured samples",
    "smooth": "smooth noise",
    "strokes": "pages with strokes",
    "harmonic": "harmonic sound",
}
PARTNERS = {"nchw": "strokes", "nhwc": "strokes", "signal": "harmonic"}  # structured's other half, by layout
DEFAULT_DOMAIN = ((-1.0, 1.0),)  # when the input's domain is not known
MIN_SIGNAL = 256  # a 2-D input this long or longer is a signal; shorter ones are feature vectors
AUDIO_RATE = 16000.0  # assumed sample rate for pitch: speech models run at 8-16 kHz


def unit_samples(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """``shape``'s samples of ``kind`` as float32 in [0, 1] (axis 0 is the sample axis); the caller maps
    them into the input's domain."""
    layout = _layout(shape)
    if kind == "structured":
        return _structured(shape, layout, rng)
    if kind == "harmonic" and layout == "signal":
        return _harmonic(shape, rng)
    if kind == "strokes" and layout in ("nchw", "nhwc"):
        return _in_layout(_strokes, shape, layout, rng)
    if layout in ("nchw", "nhwc"):
        return _in_layout(_smooth_images, shape, layout, rng)
    return _smooth_last_axes(shape, rng)


def _structured(shape: tuple[int, ...], layout: str, rng: np.random.Generator) -> np.ndarray:
    """Half the samples smooth, half of the layout's own kind (a batch of one: either, at random)."""
    partner = PARTNERS.get(layout)
    if partner is None:
        return unit_samples("smooth", shape, rng)
    if shape[0] < 2:
        return unit_samples(partner if rng.random() < 0.5 else "smooth", shape, rng)
    half = shape[0] // 2 + int(shape[0] % 2 and rng.random() < 0.5)
    own = unit_samples(partner, (half, *shape[1:]), rng)
    smooth = unit_samples("smooth", (shape[0] - half, *shape[1:]), rng)
    return np.concatenate([own, smooth])


def _layout(shape: tuple[int, ...]) -> str:
    if len(shape) == 4 and shape[1] in (1, 3, 4):
        return "nchw"
    if len(shape) == 4 and shape[3] in (1, 3, 4):
        return "nhwc"
    if (len(shape) == 2 or (len(shape) == 3 and shape[1] <= 2)) and shape[-1] >= MIN_SIGNAL:
        return "signal"
    return "other"


def _in_layout(
    make: Callable[[tuple[int, ...], np.random.Generator], np.ndarray],
    shape: tuple[int, ...],
    layout: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """``make`` draws [batch, channels, height, width]; NHWC inputs get it transposed."""
    if layout == "nchw":
        return make(shape, rng)
    batch, height, width, channels = shape
    return np.ascontiguousarray(make((batch, channels, height, width), rng).transpose(0, 2, 3, 1))


def _per_sample(rng: np.random.Generator, batch: int, low: float, high: float, dims: int) -> np.ndarray:
    return rng.uniform(low, high, size=(batch,) + (1,) * dims).astype(np.float32)


def _coarse_field(batch: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """[batch, height, width] smooth fields of zero mean and unit std: coarse Gaussian noise, upsampled
    bilinearly, with a per-sample correlation length of 2 to 1/4 of the shorter side."""
    out = np.empty((batch, height, width), np.float32)
    longest = max(2.0, min(height, width) / 4.0)
    for index in range(batch):
        step = float(np.exp(rng.uniform(np.log(2.0), np.log(longest))))  # log-uniform: fine and coarse alike
        coarse = rng.standard_normal((int(height / step) + 2, int(width / step) + 2), dtype=np.float32)
        # Bilinear upsampling is separable: rows first (on the small grid), then columns.
        y = np.arange(height, dtype=np.float32) / step
        x = np.arange(width, dtype=np.float32) / step
        y0, x0 = y.astype(np.int64), x.astype(np.int64)
        wy, wx = (y - y0)[:, None], x - x0
        tall = coarse[y0] * (1 - wy) + coarse[y0 + 1] * wy
        field = tall[:, x0] * (1 - wx) + tall[:, x0 + 1] * wx
        field -= field.mean()
        field /= field.std() + 1e-6
        out[index] = field
    return out


def _smooth_images(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    batch, channels, height, width = shape
    shared = _coarse_field(batch, height, width, rng)[:, None]
    # Channels share most of their structure, as colour channels of a photo do.
    own = _coarse_field(batch * channels, height, width, rng).reshape(shape) if channels > 1 else 0.0
    field = 0.8 * shared + 0.2 * own
    brightness = _per_sample(rng, batch, 0.2, 0.8, 3)
    contrast = _per_sample(rng, batch, 0.05, 0.3, 3)
    return np.clip(brightness + contrast * field, 0.0, 1.0)


def _smooth_last_axes(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Smooth along the last axis (the last two for rank 4 and up), per sample and leading index."""
    if len(shape) < 2:
        return rng.random(shape, dtype=np.float32)
    height, width = (shape[-2], shape[-1]) if len(shape) >= 4 else (1, shape[-1])
    leading = int(np.prod(shape[:-2])) if len(shape) >= 4 else int(np.prod(shape[:-1]))
    field = _coarse_field(leading, height, width, rng).reshape(shape)
    dims = len(shape) - 1
    brightness = _per_sample(rng, shape[0], 0.2, 0.8, dims)
    contrast = _per_sample(rng, shape[0], 0.05, 0.3, dims)
    return np.clip(brightness + contrast * field, 0.0, 1.0)


def _strokes(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Pages: a bright background, dark strokes (lines of random length, angle and width) and text-like rows."""
    batch, channels, height, width = shape
    pages = np.empty((batch, height, width), np.float32)
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    for index in range(batch):
        paper = rng.uniform(0.75, 1.0)
        ink = rng.uniform(0.0, 0.35)
        page = np.full((height, width), paper, np.float32)
        count = int(rng.integers(2, 40))
        for _ in range(count):
            if rng.random() < 0.5:  # a run of text-like marks along one line
                size = rng.uniform(2.0, max(3.0, height / 6.0))
                length = rng.uniform(size * 2, max(size * 3, width / 2.0))
                top, start = int(rng.uniform(0, height)), int(rng.uniform(0, width))
                bottom, end = min(height, int(top + size) + 1), min(width, int(start + length) + 1)
                span = cols[:, start:end]
                marks = np.sin(span * (np.pi / max(size * 0.6, 1.0)) + rng.uniform(0, 6.3)) > 0.2
                box = page[top:bottom, start:end]
                box[np.broadcast_to(marks, box.shape)] = ink
            else:  # a line segment of random width, drawn in its bounding box
                y0, y1 = rng.uniform(0, height, 2)
                x0, x1 = rng.uniform(0, width, 2)
                thickness = rng.uniform(0.5, max(1.0, min(height, width) / 30.0))
                r0, r1 = max(0, int(min(y0, y1) - thickness)), min(height, int(max(y0, y1) + thickness) + 1)
                c0, c1 = max(0, int(min(x0, x1) - thickness)), min(width, int(max(x0, x1) + thickness) + 1)
                box_rows, box_cols = rows[r0:r1], cols[:, c0:c1]
                dy, dx = y1 - y0, x1 - x0
                length2 = dy * dy + dx * dx + 1e-6
                along = np.clip(((box_rows - y0) * dy + (box_cols - x0) * dx) / length2, 0.0, 1.0)
                distance = np.hypot(box_rows - (y0 + along * dy), box_cols - (x0 + along * dx))
                box = page[r0:r1, c0:c1]
                box[distance <= thickness] = ink
        pages[index] = page
    tint = rng.uniform(-0.05, 0.05, size=(batch, channels, 1, 1)).astype(np.float32)
    return np.clip(pages[:, None, :, :] + tint, 0.0, 1.0)


def _harmonic(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Voiced sound: harmonics of a random pitch, gated on and off, plus a little noise, centred on 0.5."""
    batch, length = shape[0], shape[-1]
    time = np.arange(length, dtype=np.float32) / AUDIO_RATE
    out = np.empty((batch, length), np.float32)
    for index in range(batch):
        pitch = rng.uniform(80.0, 400.0)
        signal = np.zeros(length, np.float32)
        for harmonic in range(1, int(rng.integers(2, 8)) + 1):
            signal += np.sin(2 * np.pi * pitch * harmonic * time + rng.uniform(0, 6.3)) / harmonic
        segment = max(1, int(length / rng.uniform(1.0, 8.0)))
        gate = np.repeat(rng.random(length // segment + 1) < 0.6, segment)[:length].astype(np.float32)
        signal *= gate * rng.uniform(0.05, 0.5) / (np.abs(signal).max() + 1e-6)
        signal += rng.standard_normal(length).astype(np.float32) * rng.uniform(0.0, 0.02)
        out[index] = signal
    out = np.clip(0.5 + out, 0.0, 1.0)
    return np.broadcast_to(out.reshape(batch, *(1,) * (len(shape) - 2), length), shape).copy()
