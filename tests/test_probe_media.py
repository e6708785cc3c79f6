"""--data as users have it: folders of images (PNG/JPEG/BMP) and WAV files, with a preprocessing spec."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from relulint.cli import main
from relulint.config import Config, config_from_table
from relulint.engine import analyse
from relulint.modelkit import ModelBuilder
from relulint.preprocess import PRESETS, Preprocess, parse_preprocess
from relulint.probe import media
from relulint.probe.inputs import DataError, InputSpec, data_batches
from relulint.probe.media import audio_array, image_array, inspect_source, read_wav, resample

Image = pytest.importorskip("PIL.Image")  # the images extra; .ci/run installs it with the test extra

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def spec(shape, free=(2, 3), name="x", dtype="float32"):
    return InputSpec(name, dtype, tuple(shape), batched=True, free_axes=tuple(free))


def pixels(height=6, width=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_image(folder: Path, name: str, array: np.ndarray) -> Path:
    folder.mkdir(exist_ok=True)
    Image.fromarray(array).save(folder / name)
    return folder / name


def prep(**table):
    return parse_preprocess(table, "preprocess")


# ---- the preprocessing spec ------------------------------------------------------------------------------


def test_presets_and_overrides():
    assert prep().normalization() == PRESETS["zero-one"]
    scale, mean, std = prep(preset="imagenet").normalization()
    assert scale == 1 / 255 and mean == (0.485, 0.456, 0.406) and std == (0.229, 0.224, 0.225)
    assert prep(preset="imagenet", mean="0.5", std=[0.25]).normalization()[1:] == ((0.5,), (0.25,))
    assert prep(crop="256x192").crop == (256, 192) and prep(crop=224).crop == (224, 224)
    assert prep(size=[32, 48]).size == (32, 48) and prep(resize="256").resize == 256
    assert prep(channels="BGR").channels == "bgr" and prep(layout="nhwc").layout == "nhwc"
    assert prep(**{"sample-rate": "16000", "window": 512}) == Preprocess(sample_rate=16000, window=512)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"preset": "tf"}, "'preprocess.preset' must be one of imagenet, minus-one-one, zero-one, raw"),
        ({"resize": -1}, "'preprocess.resize' must be a whole number from 1"),
        ({"resize": 2.5}, "'preprocess.resize' must be a whole number"),
        ({"crop": "ax3"}, "'preprocess.crop' must be a side"),
        ({"std": [0.2, 0]}, "'preprocess.std' must be above 0"),
        ({"mean": ["a"]}, "'preprocess.mean' must be finite numbers"),
        ({"scale": float("nan")}, "'preprocess.scale' must be a finite number"),
        ({"layout": "chw"}, "'preprocess.layout' must be nchw or nhwc"),
        ({"window": 0}, "'preprocess.window' must be a whole number from 1"),
        ({"size": 32, "resize": 40}, "give size (exact) or resize (shorter side), not both"),
        ({"gamma": 2}, "unknown key 'gamma'"),
    ],
)
def test_bad_preprocessing_values_are_refused(table, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_preprocess(table, "preprocess")


def test_the_config_file_table_and_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "relulint.toml").write_text('[preprocess]\npreset = "imagenet"\nresize = -3\n')
    result = CliRunner().invoke(main, ["m.onnx"])
    assert result.exit_code == 2
    assert result.output == (
        f"relulint: error: {tmp_path / 'relulint.toml'}: 'preprocess.resize' must be a whole number from 1 to 16,384, got -3\n"
    )
    result = CliRunner().invoke(main, ["m.onnx", "--config", "relulint.toml"])
    assert "relulint.toml: 'preprocess.resize'" in result.output and result.exit_code == 2
    (tmp_path / "relulint.toml").unlink()
    result = CliRunner().invoke(main, ["m.onnx", "--preprocess", "crop=0"], catch_exceptions=False)
    assert result.exit_code == 2 and "'--preprocess crop' must be a side" in result.output
    # the command line adds to the file's table, key by key
    base = config_from_table({"preprocess": {"preset": "imagenet", "resize": 256}}, Config())
    both = config_from_table({"preprocess": {"crop": "224"}}, base, command_line=True)
    assert both.preprocess == Preprocess(preset="imagenet", resize=256, crop=(224, 224))


# ---- images, checked against numpy -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp"])  # lossless: exact
@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({}, lambda a: a / 255.0),
        ({"preset": "imagenet"}, lambda a: (a / 255.0 - IMAGENET_MEAN) / IMAGENET_STD),
        ({"preset": "minus-one-one"}, lambda a: a / 127.5 - 1.0),
        ({"preset": "raw"}, lambda a: a),
        ({"preset": "raw", "channels": "bgr"}, lambda a: a[:, :, ::-1]),
        ({"scale": "0.5", "mean": "10,20,30", "std": "2,4,8"}, lambda a: (a * 0.5 - [10, 20, 30]) / [2, 4, 8]),
        ({"preset": "raw", "crop": "4x2"}, lambda a: a[1:5, 3:5]),
    ],
)
def test_images_become_the_tensor_numpy_computes(tmp_path, suffix, table, expected):
    array = pixels()
    file = save_image(tmp_path, f"a{suffix}", array)
    got = image_array(file, prep(**table), spec((1, 3, 0, 0)))
    want = expected(array.astype(np.float64)).transpose(2, 0, 1)[None]
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_layout_nhwc_from_the_model_or_the_spec(tmp_path):
    array = pixels()
    file = save_image(tmp_path, "a.png", array)
    from_model = image_array(file, prep(preset="raw"), spec((1, 0, 0, 3), free=(1, 2)))
    np.testing.assert_array_equal(from_model, array[None].astype(np.float32))
    told = image_array(file, prep(preset="raw", layout="nhwc"), spec((1, 0, 0, 0), free=(1, 2, 3)))
    np.testing.assert_array_equal(told, from_model)
    with pytest.raises(DataError, match=r"'x' is Nx3x\?x\?, channels where NHWC has none"):
        image_array(file, prep(layout="nhwc"), spec((1, 3, 0, 0)))


def test_grayscale_when_the_model_takes_one_channel(tmp_path):
    gray = np.repeat(np.arange(48, dtype=np.uint8).reshape(6, 8, 1) * 5, 3, axis=2)  # R = G = B: L is exact
    file = save_image(tmp_path, "g.png", gray)
    got = image_array(file, prep(preset="imagenet"), spec((1, 1, 0, 0)))
    want = (gray[:, :, 0] / 255.0 - IMAGENET_MEAN.mean()) / IMAGENET_STD.mean()  # the three averaged
    np.testing.assert_allclose(got, want[None, None], rtol=1e-5, atol=1e-5)


def test_resizing(tmp_path):
    file = save_image(tmp_path, "wide.png", np.full((40, 60, 3), 200, np.uint8))
    assert image_array(file, prep(resize=20), spec((1, 3, 0, 0))).shape == (1, 3, 20, 30)
    assert image_array(file, prep(resize=20, crop=16), spec((1, 3, 0, 0))).shape == (1, 3, 16, 16)
    exact = image_array(file, prep(size="24x32"), spec((1, 3, 0, 0)))
    np.testing.assert_allclose(exact, np.full((1, 3, 24, 32), 200 / 255), rtol=1e-6)  # a flat image stays flat
    # a model that fixes its size: images are resized to it unless the spec says otherwise
    assert image_array(file, prep(), spec((1, 3, 28, 28), free=())).shape == (1, 3, 28, 28)
    with pytest.raises(DataError, match=r"wide.png is 16x16 after preprocessing but 'x' takes 28x28"):
        image_array(file, prep(resize=20, crop=16), spec((1, 3, 28, 28), free=()))
    with pytest.raises(DataError, match="smaller than the crop 50x50"):
        image_array(file, prep(crop=50), spec((1, 3, 0, 0)))


def test_jpeg_is_decoded_close_to_its_pixels(tmp_path):
    smooth = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 32, 3)).copy()
    file = tmp_path / "s.jpg"
    Image.fromarray(smooth).save(file, quality=95)
    got = image_array(file, prep(preset="raw"), spec((1, 3, 0, 0)))
    assert got.shape == (1, 3, 32, 32) and np.abs(got[0].transpose(1, 2, 0) - smooth).mean() < 3


def test_a_file_that_is_no_image_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: cannot identify image file"):
        image_array(tmp_path / "broken.png", prep(), spec((1, 3, 0, 0)))


# ---- WAV files -------------------------------------------------------------------------------------------


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> Path:
    """``samples``: [frames, channels] integers of the given byte width (8-bit unsigned)."""
    data = np.asarray(samples)
    if width == 3:
        raw = data.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raw = data.astype({1: np.uint8, 2: "<i2", 4: "<i4"}[width]).tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(data.shape[1])
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(raw)
    return path


def test_wav_samples_are_scaled_to_minus_one_one_and_mixed_to_mono(tmp_path):
    stereo = np.random.default_rng(0).integers(-32768, 32767, (1000, 2))
    values, rate = read_wav(write_wav(tmp_path / "s.wav", stereo, 8000))
    assert rate == 8000
    np.testing.assert_allclose(values, (stereo / 32768.0).mean(axis=1), atol=1e-6)
    bytes8 = np.random.default_rng(1).integers(0, 256, (100, 1))
    np.testing.assert_allclose(read_wav(write_wav(tmp_path / "b.wav", bytes8, 8000, 1))[0], (bytes8[:, 0] - 128) / 128)
    deep = np.random.default_rng(2).integers(-(2**23), 2**23, (100, 1))
    np.testing.assert_allclose(read_wav(write_wav(tmp_path / "d.wav", deep, 8000, 3))[0], deep[:, 0] / 2.0**23)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(DataError, match="bad.wav: .* \\(PCM WAV only\\)"):
        read_wav(tmp_path / "bad.wav")


def test_wav_resampled_linearly_and_cut_into_windows(tmp_path):
    mono = np.random.default_rng(0).integers(-20000, 20000, (1000, 1))
    file = write_wav(tmp_path / "m.wav", mono, 8000)
    values = mono[:, 0] / 32768.0
    up = np.interp(np.arange(2000) * 0.5, np.arange(1000), values)
    np.testing.assert_allclose(resample(values.astype(np.float32), 8000, 16000), up, atol=1e-6)
    windows, rate = audio_array(file, prep(**{"sample-rate": 16000, "window": 300}), spec((1, 0), free=(1,)))
    assert rate == 16000 and windows.shape == (6, 300)  # 2000 samples: 6 windows, the tail of 200 dropped
    np.testing.assert_allclose(windows.ravel(), up[:1800], atol=1e-6)
    fixed, _ = audio_array(file, prep(), spec((1, 1, 250), free=()))  # the model fixes the length
    assert fixed.shape == (4, 1, 250)
    whole, _ = audio_array(file, prep(), spec((1, 0), free=(1,)))  # neither: the whole file
    assert whole.shape == (1, 1000)


# ---- the folder ------------------------------------------------------------------------------------------


def test_the_kind_of_a_source(tmp_path):
    save_image(tmp_path / "imgs", "a.png", pixels())
    save_image(tmp_path / "imgs" / "cats", "b.jpg", pixels())  # class subfolders are read too
    source = inspect_source(str(tmp_path / "imgs"))
    assert source.kind == "images" and [f.name for f in source.files] == ["a.png", "b.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="expected .npz/.npy arrays, PNG/JPEG/BMP images or WAV files"):
        inspect_source(str(tmp_path / "empty"))


def test_a_symlink_out_of_the_data_folder_is_refused(tmp_path):
    outside = save_image(tmp_path, "secret.png", pixels())
    folder = tmp_path / "imgs"
    save_image(folder, "a.png", pixels())
    (folder / "b.png").symlink_to(outside)
    with pytest.raises(DataError, match="b.png is a symbolic link out of the folder"):
        inspect_source(str(folder))
    result = CliRunner().invoke(main, [str(tmp_path / "m.onnx"), "--data", str(folder)])
    assert result.exit_code == 2
    assert result.output.strip() == f"relulint: error: {folder}: b.png is a symbolic link out of the folder"


def test_without_pillow_one_line_says_what_to_install(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    save_image(folder, "a.png", pixels())
    monkeypatch.setattr(media, "pillow_installed", lambda: False)
    result = CliRunner().invoke(main, [str(tmp_path / "m.onnx"), "--data", str(folder)])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"relulint: error: {folder}: reading images needs Pillow: pip install 'relulint[images]'"
    )


def test_array_files_of_different_shapes_run_in_batches_of_one_shape(tmp_path):
    for name, shape in (("a", (3, 1, 4, 4)), ("b", (2, 1, 6, 6)), ("c", (2, 1, 6, 6))):
        np.save(tmp_path / f"{name}.npy", np.ones(shape, np.float32))
    batches = list(data_batches([spec((4, 1, 4, 4), free=(2, 3))], str(tmp_path), 4, 0))
    assert [b["x"].shape for b in batches] == [(3, 1, 4, 4), (4, 1, 6, 6)]
    with pytest.raises(DataError, match="needs Nx1x4x4"):  # a dim the model fixes must match
        list(data_batches([spec((4, 1, 4, 4), free=())], str(tmp_path), 4, 0))


# ---- end to end: dead units that depend on the data ------------------------------------------------------


def brightness_model():
    """Unit 0 is relu(mean of the three channels - 0.5), unit 1 relu(0.5 - mean): on [0, 1] pixels
    unit 0 is dead on dark images and unit 1 on bright ones; unit 2 is dead on every image."""
    b = ModelBuilder(seed=0)
    x = b.input("image", ["N", 3, "H", "W"])
    weight = np.zeros((3, 3, 1, 1), np.float32)
    weight[0], weight[1] = 1 / 3, -1 / 3
    conv = b.conv(x, 3, 3, k=1, weight=weight, bias=np.array([-0.5, 0.5, -10], np.float32))
    act = b.relu(conv, name="act")
    return b.build([b.global_pool_flatten(act)])


def dead(path, data, **config):
    result = analyse(str(path), Config(select=("RL5",), data=str(data), **config))
    assert result.error is None, result.error
    return result, result.analyses.to_json()["probe"]["layers"]["act"]


def test_the_dead_units_follow_the_images(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(brightness_model(), path)
    rng = np.random.default_rng(0)
    for i in range(5):
        save_image(tmp_path / "dark", f"{i}.png", rng.integers(0, 60, (20 + i, 16, 3), dtype=np.uint8))
        save_image(tmp_path / "bright", f"{i}.jpg", rng.integers(200, 256, (16, 16, 3), dtype=np.uint8))
    result, layer = dead(path, tmp_path / "dark")
    assert layer["dead"] == 2 and layer["positive_rate"][1] == 1.0  # units 0 and 2; sizes vary: 5 shapes
    assert result.analyses.to_json()["probe"]["samples"] == 5
    (note,) = [n.message for n in result.notes if n.message.startswith("probe data:")]
    assert "5 image(s)" in note and "in 5 shapes (3x20x16, 3x21x16, 3x22x16, 3x23x16, ...)" in note
    _, layer = dead(path, tmp_path / "bright")
    assert layer["dead"] == 2 and layer["positive_rate"][0] == 1.0  # units 1 and 2
    # raw 0..255 pixels: every dark image is "bright" for the model
    _, layer = dead(path, tmp_path / "dark", preprocess=Preprocess(preset="raw"))
    assert layer["dead"] == 2 and layer["positive_rate"][0] == 1.0
    # --samples caps the images decoded, drawn at random
    result, _ = dead(path, tmp_path / "dark", samples=3)
    assert result.analyses.to_json()["probe"]["samples"] == 3


def test_per_unit_rates_equal_onnxruntime_on_the_same_images(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(brightness_model(), path)
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 256, (12, 10 + 2 * (i % 2), 3), dtype=np.uint8) for i in range(6)]
    for i, array in enumerate(arrays):
        save_image(tmp_path / "imgs", f"{i}.bmp", array)
    _, layer = dead(path, tmp_path / "imgs", preprocess=Preprocess(preset="imagenet"), batch=4)
    model = onnx.load(path)
    model.graph.output.append(onnx.helper.make_tensor_value_info("act_out", onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    positive, positions = np.zeros(3), 0
    for array in arrays:
        x = ((array / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
        act = session.run(["act_out"], {"image": x})[0]
        positive += (act > 0).sum(axis=(0, 2, 3))
        positions += act[0, 0].size
    np.testing.assert_allclose(layer["positive_rate"], positive / positions, rtol=1e-6)


def loudness_model(window=64):
    """unit 0 fires when the window's mean absolute amplitude is over 0.25 (|x| via relu(x) + relu(-x))."""
    b = ModelBuilder(seed=0)
    x = b.input("input", ["N", window])
    both = b.relu(b.node("MatMul", [x, b.const(np.hstack([np.eye(window), -np.eye(window)]).astype(np.float32))]))
    summed = b.node("MatMul", [both, b.const(np.full((2 * window, 1), 1 / window, np.float32))])
    act = b.relu(b.node("Add", [summed, b.const(np.array([-0.25], np.float32))]), name="act")
    return b.build([act])


def test_the_dead_units_follow_the_audio(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(loudness_model(), path)
    folder = tmp_path / "wav"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_wav(folder / "quiet.wav", rng.integers(-3000, 3000, (640, 1)), 8000)
    result, layer = dead(path, folder, preprocess=Preprocess(window=64))
    assert layer["dead"] == 1 and result.analyses.to_json()["probe"]["samples"] == 10
    write_wav(folder / "loud.wav", rng.integers(-30000, 30000, (1280, 2)), 16000)  # stereo, another rate
    result, layer = dead(path, folder, preprocess=Preprocess(window=64, sample_rate=8000))
    assert layer["dead"] == 0 and result.analyses.to_json()["probe"]["samples"] == 20  # 10 + 640 resampled samples
    (note,) = [n.message for n in result.notes if n.message.startswith("probe data:")]
    assert "2 WAV file(s) in 20 window(s) of 64 samples" in note


def test_a_file_that_cannot_be_decoded_is_skipped_and_named(tmp_path):
    b = ModelBuilder(seed=0)
    act = b.relu(b.conv(b.input("x", ["N", 1, 12, 12]), 1, 2, k=1), name="act")
    path = tmp_path / "m.onnx"
    onnx.save(b.build([b.global_pool_flatten(act)]), path)
    for i in range(3):
        save_image(tmp_path / "imgs", f"{i}.png", pixels(20, 16, seed=i))
    (tmp_path / "imgs" / "z.png").write_bytes(b"not a png")
    result, _ = dead(path, tmp_path / "imgs")
    assert result.analyses.to_json()["probe"]["samples"] == 3
    (note,) = [n.message for n in result.notes if n.message.startswith("probe data:")]
    assert "3 image(s) resized to the input's 12x12, grayscale, x*0.00392157 (preset zero-one), NCHW" in note
    assert "1 file(s) could not be read (z.png: cannot identify image file" in note
