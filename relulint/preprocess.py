"""How image and audio files in a ``--data`` folder become model inputs: the preprocessing spec.

Pure data and its validation (``[tool.relulint.preprocess]`` in the config, ``--preprocess KEY=VALUE`` on
the command line); ``relulint.probe.media`` applies it. Images: pixels as 0..255 floats, then
``x * scale``, then ``(x - mean) / std`` per channel; a preset sets scale, mean and std at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

# name -> (scale, mean, std): the conventions models are trained with.
PRESETS: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's
    "minus-one-one": (1 / 127.5, (1.0,), (1.0,)),  # x / 127.5 - 1: Inception, MobileNet (TF/Keras)
    "zero-one": (1 / 255, (0.0,), (1.0,)),  # x / 255
    "raw": (1.0, (0.0,), (1.0,)),  # 0..255 as float
}
DEFAULT_PRESET = "zero-one"
CHANNEL_ORDERS = ("rgb", "bgr")
LAYOUTS = ("nchw", "nhwc")
MAX_SIDE = 16384  # pixels: a resize beyond this is a typo, and its buffer would not fit
MAX_WINDOW = 2**26  # audio samples in one window
MAX_RATE = 1_000_000  # Hz


@dataclass(frozen=True)
class Preprocess:
    """Every field None (or the default) leaves the choice to the model's input shape."""

    preset: str = DEFAULT_PRESET
    resize: int | None = None  # the shorter side is resized to this (aspect kept), before any crop
    crop: tuple[int, int] | None = None  # (height, width) center crop
    size: tuple[int, int] | None = None  # (height, width): resized to exactly this (aspect not kept)
    channels: str = "rgb"  # channel order of a 3-channel input
    layout: str | None = None  # "nchw" or "nhwc"; None: from the input's shape (a dim of 1 or 3 channels)
    scale: float | None = None  # overrides the preset's
    mean: tuple[float, ...] | None = None  # per channel (or one for all), overrides the preset's
    std: tuple[float, ...] | None = None
    sample_rate: int | None = None  # Hz the model expects: audio at another rate is resampled to it
    window: int | None = None  # audio samples per model input; None: the input's fixed length, else the file

    def normalization(self) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
        """(scale, mean, std) after the explicit keys override the preset."""
        scale, mean, std = PRESETS[self.preset]
        return (
            scale if self.scale is None else self.scale,
            mean if self.mean is None else self.mean,
            std if self.std is None else self.std,
        )

    def describe_image(self, grayscale: bool = False) -> str:
        scale, mean, std = self.normalization()
        steps = []
        if self.size:
            steps.append(f"resized to {self.size[0]}x{self.size[1]}")
        if self.resize:
            steps.append(f"shorter side resized to {self.resize}")
        if self.crop:
            steps.append(f"center-cropped to {self.crop[0]}x{self.crop[1]}")
        steps.append(f"{'grayscale' if grayscale else self.channels.upper()}, x*{scale:.6g}")
        if any(mean) or any(s != 1 for s in std):
            steps.append(f"mean {'/'.join(f'{m:g}' for m in mean)}, std {'/'.join(f'{s:g}' for s in std)}")
        return f"{', '.join(steps)} (preset {self.preset})"


KEYS = ("preset", "resize", "crop", "size", "channels", "layout", "scale", "mean", "std", "sample-rate", "window")


def parse_preprocess(value: Any, key: str, base: Preprocess | None = None) -> Preprocess:
    """A table of preprocessing keys (values as TOML gives them, or text from the command line) applied on
    ``base``; raise ValueError naming ``key.item`` for anything wrong."""
    if not isinstance(value, dict):
        raise ValueError(f"'{key}' must be a table of preprocessing keys ({', '.join(KEYS)}), got {value!r}")
    result = base or Preprocess()
    changes: dict[str, Any] = {}
    for item, setting in value.items():
        where = f"{key} {item}" if key.startswith("--") else f"{key}.{item}"
        if item == "preset":
            if setting not in PRESETS:
                raise ValueError(f"'{where}' must be one of {', '.join(PRESETS)}, got {setting!r}")
            changes["preset"] = setting
        elif item == "resize":
            changes["resize"] = _side(setting, where)
        elif item in ("crop", "size"):
            changes[item] = _height_width(setting, where)
        elif item == "channels":
            changes["channels"] = _choice(setting, CHANNEL_ORDERS, where)
        elif item == "layout":
            changes["layout"] = _choice(setting, LAYOUTS, where)
        elif item == "scale":
            scale = _numbers(setting, where, 1)[0]
            if scale == 0:
                raise ValueError(f"'{where}' must not be 0")
            changes["scale"] = scale
        elif item in ("mean", "std"):
            numbers = _numbers(setting, where, None)
            if item == "std" and any(v <= 0 for v in numbers):
                raise ValueError(f"'{where}' must be above 0 for every channel, got {setting!r}")
            changes[item] = numbers
        elif item == "sample-rate":
            changes["sample_rate"] = _whole(setting, where, 1, MAX_RATE)
        elif item == "window":
            changes["window"] = _whole(setting, where, 1, MAX_WINDOW)
        else:
            raise ValueError(f"'{key}': unknown key '{item}' (allowed: {', '.join(KEYS)})")
    if changes.get("size") and (changes.get("resize") or result.resize):
        raise ValueError(f"'{key}': give size (exact) or resize (shorter side), not both")
    return replace(result, **changes)


def parse_command_line(items: tuple[str, ...]) -> dict[str, str]:
    """``--preprocess KEY=VALUE`` options (a bare preset name stands for ``preset=NAME``) as a table."""
    table = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep and item in PRESETS:
            name, value = "preset", item
        elif not sep or not name.strip():
            raise ValueError(f"--preprocess expects KEY=VALUE or a preset ({', '.join(PRESETS)}), got '{item}'")
        table[name.strip()] = value.strip()
    return table


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    text = value.lower() if isinstance(value, str) else None
    if text not in allowed:
        raise ValueError(f"'{where}' must be {' or '.join(allowed)}, got {value!r}")
    return text


def _whole(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"'{where}' must be a whole number from {low} to {high:,}, got {value!r}")
    return value


def _side(value: Any, where: str) -> int:
    return _whole(value, where, 1, MAX_SIDE)


def _height_width(value: Any, where: str) -> tuple[int, int]:
    """224 (square), "256x192" / [256, 192] (height x width)."""
    if isinstance(value, str):
        parts = [p for p in re.split(r"[x,\s]+", value.strip().lower()) if p]
        value = [int(p) if p.isdigit() else p for p in parts]
    sides = value if isinstance(value, list) else [value]
    try:
        if len(sides) not in (1, 2):
            raise ValueError
        height, width = (_side(sides[0], where), _side(sides[-1], where))
    except ValueError:
        raise ValueError(
            f"'{where}' must be a side (224) or height x width (\"256x192\") from 1 to {MAX_SIDE:,}, got {value!r}"
        ) from None
    return height, width


def _numbers(value: Any, where: str, count: int | None) -> tuple[float, ...]:
    """Finite numbers: one (or ``count``), or a list/comma-separated text of one per channel."""
    try:
        if isinstance(value, str):
            items: list[Any] = [float(p) for p in re.split(r"[,/\s]+", value.strip()) if p]
        elif isinstance(value, list):
            items = value
        else:
            items = [value]
        numbers = tuple(_finite(v) for v in items)
    except (ValueError, TypeError):
        numbers = ()
    if not numbers or (count is not None and len(numbers) != count):
        what = "a finite number" if count == 1 else "finite numbers, one or one per channel (0.485,0.456,0.406)"
        raise ValueError(f"'{where}' must be {what}, got {value!r}")
    return numbers


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError
    return float(value)
