"""Image and audio folders as ``--data``: decoded in the parent into arrays the probe's child reads.

The child stays lean (numpy and onnxruntime only, never Pillow): here each image or WAV file becomes one
``.npz`` in the probe's temporary folder, named so that samples of one shape are consecutive (the child
then runs each shape in batches of its own). Images need Pillow (``pip install 'relulint[images]'``);
WAV files are read with the standard library's ``wave`` (PCM only).

Images: decoded to RGB (or grayscale when the input takes 1 channel), resized (``size`` exactly, or the
shorter side to ``resize``) with Pillow's bilinear filter, center-cropped, channels reordered (BGR), then
``x * scale``, ``(x - mean) / std`` per channel in float32, and laid out NCHW or NHWC.
Audio: integers scaled to [-1, 1) (int16 / 32768; 8-bit PCM is unsigned, centred on 128), channels mixed
down to mono by their mean, resampled to ``sample-rate`` by linear interpolation (``numpy.interp`` at the
new sample times: simple, and with no anti-aliasing filter when it lowers the rate), cut into consecutive
windows of ``window`` samples (a shorter tail is dropped).
"""

from __future__ import annotations

import importlib.util
import os
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from relulint.preprocess import Preprocess
from relulint.probe.inputs import DATA_SUFFIXES, DataError, InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
AUDIO_SUFFIXES = (".wav",)
# Scalar inputs filled with the audio's sample rate (silero-vad's `sr`).
RATE_INPUTS = ("sr", "sample_rate", "sampling_rate", "rate")
INSTALL_HINT = "pip install 'relulint[images]'"


class Unreadable(DataError):
    """One file that cannot be decoded: skipped, and named in the note, while others can be."""


@dataclass(frozen=True)
class Source:
    """What a --data path holds."""

    kind: str  # "arrays" (.npz/.npy), "images" or "audio"
    files: tuple[Path, ...]  # in name order (subfolders included for images and audio)


def inspect_source(path: str) -> Source:
    """The kind of a --data source and its files; DataError for anything it cannot be (one line)."""
    root = Path(path)
    if root.is_symlink() and not root.exists():
        raise DataError(f"--data {path}: a broken symbolic link")
    files: tuple[Path, ...]
    if root.is_file():
        files = (root,)
    elif root.is_dir():
        files = tuple(_files_below(root))
    else:
        raise DataError(f"--data {path}: no such file or folder")
    suffixes = {f.suffix.lower() for f in files}
    if suffixes & set(DATA_SUFFIXES):
        return Source("arrays", tuple(f for f in files if f.suffix.lower() in DATA_SUFFIXES))
    images = tuple(f for f in files if f.suffix.lower() in IMAGE_SUFFIXES)
    audio = tuple(f for f in files if f.suffix.lower() in AUDIO_SUFFIXES)
    if images and audio:
        raise DataError(f"--data {path}: holds both images and WAV files; give a folder of one kind")
    if images:
        if not pillow_installed():
            raise DataError(f"--data {path}: reading images needs Pillow: {INSTALL_HINT}")
        return Source("images", images)
    if audio:
        return Source("audio", audio)
    what = "file" if root.is_file() else "folder"
    raise DataError(
        f"--data {path}: expected .npz/.npy arrays, PNG/JPEG/BMP images or WAV files, but the {what} holds none"
    )


def pillow_installed() -> bool:
    return importlib.util.find_spec("PIL") is not None


def _files_below(root: Path) -> Iterator[Path]:
    """Regular files under ``root``, in name order; a symbolic link that leaves the folder is refused
    (links inside it are read as what they point to, links to folders are not followed)."""
    inside = root.resolve()
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names) + [d for d in subfolders if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder, name)
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(inside):
                    raise DataError(f"--data {root}: {path.relative_to(root)} is a symbolic link out of the folder")
                if not target.is_file():
                    continue
            if path.is_file():
                yield path


@dataclass
class Prepared:
    """Decoded samples written as .npz files into ``folder``; what was done, for a note."""

    folder: Path
    samples: int = 0
    files: int = 0
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # one per shape group, in file-name order
    how: str = ""
    left_out: int = 0  # files not decoded: beyond --samples, or the byte budget
    short: int = 0  # WAV files shorter than one window
    unreadable: list[str] = field(default_factory=list)  # "name: why" of each file that could not be decoded

    def problems(self) -> str:
        """What was left out and why, for the note ("" when nothing was)."""
        parts = []
        if self.left_out:
            parts.append(f"{self.left_out} file(s) left out (--samples, or over --probe-memory decoded)")
        if self.short:
            parts.append(f"{self.short} file(s) shorter than one window")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} file(s) could not be read ({self.unreadable[0]})")
        return "; ".join(parts)


def prepare(
    source: Source, specs: list[InputSpec], prep: Preprocess, folder: Path, samples: int, seed: int, budget: int
) -> Prepared:
    """Decode ``source`` (images or audio) for the model's inputs into ``folder``: at most ``samples`` files
    (images; 0: all), drawn at random when capped, and at most ``budget`` bytes of decoded arrays."""
    target, rate_input = _target(specs, source.kind)
    files = list(source.files)
    order = list(range(len(files)))
    if source.kind == "images" and samples and samples < len(files):
        order = sorted(np.random.default_rng(seed).choice(len(files), size=samples, replace=False).tolist())
    result = Prepared(folder=folder)
    groups: dict[tuple[int, ...], int] = {}
    used = 0
    decoded = 0
    for index in order:
        file = files[index]
        decoded += 1
        try:
            if source.kind == "images":
                array = image_array(file, prep, target)
                extra = {}
            else:
                array, rate = audio_array(file, prep, target)
                extra = {rate_input.name: _rate_value(rate_input, rate)} if rate_input else {}
        except Unreadable as exc:
            result.unreadable.append(str(exc))
            continue
        if array.shape[0] == 0:
            result.short += 1
            continue
        if used + array.nbytes > budget:
            decoded -= 1
            break
        used += array.nbytes
        group = groups.setdefault(array.shape[1:], len(groups))
        # The stub's allow_pickle keyword (numpy 2.1+) could be one of the names: mypy cannot tell it is not.
        np.savez(folder / f"{group:04d}-{index:06d}.npz", **{target.name: array}, **extra)  # type: ignore[arg-type]
        result.samples += array.shape[0]
        result.files += 1
    result.shapes = list(groups)
    result.left_out = len(files) - decoded
    if source.kind == "images":
        layout, channels, height, width = image_layout(target, prep)
        fitted = height and width and not (prep.size or prep.resize or prep.crop)
        size = f"resized to the input's {height}x{width}, " if fitted else ""
        result.how = f"{result.files} image(s) {size}{prep.describe_image(channels == 1)}, {layout.upper()}"
    else:
        result.how = f"{result.files} WAV file(s) in {result.samples} window(s) of {_window_text(target, prep)}"
    if not result.files:
        raise DataError(f"no file of the --data folder gave a sample ({result.problems() or 'none decoded'})")
    return result


def _target(specs: list[InputSpec], kind: str) -> tuple[InputSpec, InputSpec | None]:
    """The input the images or audio feed, and a scalar sample-rate input (audio) to fill with the rate."""
    rate_input = None
    if kind == "audio":
        rate_input = next((s for s in specs if s.name.lower() in RATE_INPUTS and not s.batched), None)
    others = [s for s in specs if s is not rate_input and not s.carried_from]
    floats = [s for s in others if s.dtype.startswith(("float", "uint8"))]
    if len(floats) != 1 or len(others) != 1:
        names = ", ".join(s.name for s in others)
        raise DataError(
            f"{'images' if kind == 'images' else 'WAV files'} can feed a model with one input; this one has {names}: "
            "give a .npz with one array per input"
        )
    return floats[0], rate_input


def _rate_value(spec: InputSpec, rate: int) -> np.ndarray:
    return np.full(spec.shape, rate, dtype=np.dtype(spec.dtype))


def _window_text(target: InputSpec, prep: Preprocess) -> str:
    if prep.window:
        return f"{prep.window} samples"
    fixed = _fixed_length(target)
    return f"{fixed} samples (the input's length)" if fixed else "the whole file"


# ---- images ---------------------------------------------------------------------------------------------


def image_layout(spec: InputSpec, prep: Preprocess) -> tuple[str, int | None, int | None, int | None]:
    """(layout, channels, height, width) the input takes; None where the model leaves it open."""
    if len(spec.shape) != 4:
        raise DataError(f"images feed an input of rank 4 (NCHW or NHWC); '{spec.name}' has rank {len(spec.shape)}")
    dims = [None if i in spec.free_axes else d for i, d in enumerate(spec.shape)]
    layout = prep.layout
    if layout is None:
        layout = "nhwc" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "nchw"
    other = {"nchw": (3, 1), "nhwc": (1, 3)}[layout]  # (the other layout's channel axis, this one's)
    if dims[other[0]] in (1, 3) and dims[other[1]] is None:
        shown = "x".join("N" if i == spec.batch_axis else "?" if d is None else str(d) for i, d in enumerate(dims))
        raise DataError(
            f"'{spec.name}' is {shown}, channels where {layout.upper()} has none: check --preprocess layout"
        )
    channels, height, width = (dims[1], dims[2], dims[3]) if layout == "nchw" else (dims[3], dims[1], dims[2])
    if channels not in (None, 1, 3):
        raise DataError(f"images have 1 or 3 channels; '{spec.name}' takes {channels} ({layout.upper()})")
    return layout, channels, height, width


def image_array(file: Path, prep: Preprocess, spec: InputSpec) -> np.ndarray:
    """One image as a [1, ...] batch for ``spec``: decoded, resized, cropped, normalized, laid out."""
    from PIL import Image  # an optional dependency: relulint[images]

    layout, channels, height, width = image_layout(spec, prep)
    try:
        with Image.open(file) as opened:
            image = opened.convert("L" if channels == 1 else "RGB")
    except Exception as exc:  # noqa: BLE001  (Pillow raises many types for a file it cannot decode)
        raise Unreadable(f"{file.name}: {' '.join(str(exc).split())[:160]}") from None
    size = prep.size or ((height, width) if height and width and not (prep.resize or prep.crop) else None)
    if size:
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    elif prep.resize:
        image = image.resize(_shorter_side(image.width, image.height, prep.resize), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if prep.crop:
        pixels = center_crop(pixels, prep.crop, file)
    if prep.channels == "bgr" and pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]
    pixels = normalize(pixels, prep)
    if (height and pixels.shape[0] != height) or (width and pixels.shape[1] != width):
        raise DataError(
            f"{file.name} is {pixels.shape[0]}x{pixels.shape[1]} after preprocessing but '{spec.name}' takes "
            f"{height or 'any'}x{width or 'any'}; set --preprocess size= (or resize= and crop=)"
        )
    laid = pixels.transpose(2, 0, 1) if layout == "nchw" else pixels
    return np.ascontiguousarray(laid[None], dtype=np.dtype(spec.dtype))


def _shorter_side(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``side`` and the aspect ratio kept (rounded)."""
    if width <= height:
        return side, max(1, round(height * side / width))
    return max(1, round(width * side / height)), side


def center_crop(pixels: np.ndarray, crop: tuple[int, int], file: Path) -> np.ndarray:
    """The central ``crop`` (height, width) of an [H, W, C] image (the extra pixel, if odd, on the right/bottom)."""
    height, width = crop
    if pixels.shape[0] < height or pixels.shape[1] < width:
        raise DataError(
            f"{file.name} is {pixels.shape[0]}x{pixels.shape[1]}, smaller than the crop {height}x{width}; add resize="
        )
    top = (pixels.shape[0] - height) // 2
    left = (pixels.shape[1] - width) // 2
    return pixels[top : top + height, left : left + width]


def normalize(pixels: np.ndarray, prep: Preprocess) -> np.ndarray:
    """``(x * scale - mean) / std`` per channel of an [H, W, C] float32 image; a 3-value mean or std on one
    channel (a grayscale input with the imagenet preset) uses the average of the three."""
    scale, mean, std = prep.normalization()
    channels = pixels.shape[2]
    means = _per_channel(mean, channels, "mean")
    stds = _per_channel(std, channels, "std")
    return (pixels * np.float32(scale) - means) / stds


def _per_channel(values: tuple[float, ...], channels: int, name: str) -> np.ndarray:
    if len(values) == channels or len(values) == 1:
        return np.asarray(values, np.float32)
    if channels == 1:
        return np.asarray([np.mean(values)], np.float32)
    raise DataError(f"--preprocess {name} has {len(values)} values but the images have {channels} channels")


# ---- audio ----------------------------------------------------------------------------------------------


def read_wav(file: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1) and the file's rate; PCM only (8, 16, 24 or 32 bits)."""
    try:
        with wave.open(str(file), "rb") as stream:
            channels, width, rate = stream.getnchannels(), stream.getsampwidth(), stream.getframerate()
            raw = stream.readframes(stream.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise Unreadable(f"{file.name}: {exc} (PCM WAV only)") from None
    frames = len(raw) // (width * channels)
    raw = raw[: frames * width * channels]
    if width == 1:
        values = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # little-endian 24-bit: widen to 32 bits by putting the bytes in the top three
        padded = np.zeros((frames * channels, 4), np.uint8)
        padded[:, 1:] = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        values = padded.view("<i4").ravel().astype(np.float32) / 2.0**31
    elif width in (2, 4):
        values = np.frombuffer(raw, f"<i{width}").astype(np.float32) / np.float32(2.0 ** (8 * width - 1))
    else:
        raise Unreadable(f"{file.name}: {8 * width}-bit samples")
    return values.reshape(frames, channels).mean(axis=1, dtype=np.float32), rate


def resample(values: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear interpolation at the target rate's sample times (``numpy.interp``)."""
    if rate == target or values.size == 0:
        return values
    count = int(round(values.size * target / rate))
    times = np.arange(count, dtype=np.float64) * (rate / target)
    return np.interp(times, np.arange(values.size, dtype=np.float64), values).astype(np.float32)


def _fixed_length(spec: InputSpec) -> int | None:
    """The input's time dim when the model fixes it: the largest dim besides the batch axis."""
    dims = [d for i, d in enumerate(spec.shape) if i != spec.batch_axis and i not in spec.free_axes]
    long = [d for d in dims if d > 1]
    return long[0] if len(long) == 1 else None


def audio_array(file: Path, prep: Preprocess, spec: InputSpec) -> tuple[np.ndarray, int]:
    """One WAV file as consecutive windows [windows, ...] shaped for ``spec``, and the rate they are at."""
    if len(spec.shape) not in (2, 3) or spec.batch_axis != 0:
        raise DataError(f"WAV files feed an input shaped [N, T], [N, 1, T] or [N, T, 1]; '{spec.name}' is not")
    values, rate = read_wav(file)
    if prep.sample_rate:
        values, rate = resample(values, rate, prep.sample_rate), prep.sample_rate
    window = prep.window or _fixed_length(spec) or values.size
    count = values.size // window if window else 0
    windows = values[: count * window].reshape(count, window)
    if len(spec.shape) == 3:
        time_axis = 1 if spec.shape[2] == 1 and 1 not in spec.free_axes else 2
        windows = windows[:, :, None] if time_axis == 1 else windows[:, None, :]
    return np.ascontiguousarray(windows, dtype=np.dtype(spec.dtype)), rate
