"""Structured synthetic inputs (--input-dist smooth|strokes|harmonic): in the domain, varying between samples."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from relulint import config_values
from relulint.config import Config, config_from_table
from relulint.engine import analyse
from relulint.modelkit import ModelBuilder
from relulint.probe import structured
from relulint.probe.inputs import InputSpec, parse_distribution, synthetic_batch


def test_the_config_knows_the_same_structured_kinds_as_the_generator():
    assert config_values.STRUCTURED_KINDS == structured.KINDS


@pytest.mark.parametrize(
    ("kind", "shape"),
    [
        ("smooth", (6, 3, 32, 40)),
        ("strokes", (6, 3, 32, 40)),
        ("strokes", (6, 32, 40, 3)),  # NHWC
        ("strokes", (6, 1, 24, 64)),  # one channel
        ("harmonic", (6, 4000)),
        ("harmonic", (6, 1, 4000)),
        ("smooth", (6, 12)),  # a feature vector: smooth along its axis
        ("harmonic", (6, 12)),  # too short for a signal: smooth
        ("smooth", (6, 5, 7, 9)),  # not an image layout: smooth along the last axes
        ("structured", (6, 3, 32, 40)),  # half strokes, half smooth
        ("structured", (7, 1, 4000)),  # half harmonic, half smooth
        ("structured", (6, 12)),  # smooth
    ],
)
def test_each_kind_stays_in_the_domain_and_differs_between_samples(kind, shape):
    spec = InputSpec("x", "float32", shape, batched=True, domain=((0.0, 255.0),))
    values = synthetic_batch([spec], shape[0], parse_distribution(kind), np.random.default_rng(0))["x"]
    assert values.shape == shape and values.dtype == np.float32
    assert 0.0 <= values.min() and values.max() <= 255.0
    per_sample_mean = values.reshape(shape[0], -1).mean(axis=1)
    # What i.i.d. noise lacks: samples that differ in their global statistics (what a global pool sees).
    assert per_sample_mean.std() > 1.0 or values.reshape(shape[0], -1).std(axis=1).std() > 1.0
    again = synthetic_batch([spec], shape[0], parse_distribution(kind), np.random.default_rng(0))["x"]
    assert np.array_equal(values, again)  # the seed decides


def test_without_a_domain_structured_samples_span_minus_one_to_one():
    spec = InputSpec("x", "float32", (4, 3, 16, 16), batched=True)
    values = synthetic_batch([spec], 4, parse_distribution("smooth"), np.random.default_rng(1))["x"]
    assert -1.0 <= values.min() < 0.0 < values.max() <= 1.0


def test_strokes_look_like_pages_mostly_background():
    spec = InputSpec("x", "float32", (8, 1, 48, 200), batched=True, domain=((0.0, 1.0),))
    page = synthetic_batch([spec], 8, parse_distribution("strokes"), np.random.default_rng(2))["x"]
    bright = (page > 0.6).mean()
    dark = (page < 0.45).mean()
    assert bright > 0.5 and 0.0 < dark < 0.5


def test_harmonic_sound_has_a_pitch():
    spec = InputSpec("x", "float32", (4, 16000), batched=True, domain=((-1.0, 1.0),))
    sound = synthetic_batch([spec], 4, parse_distribution("harmonic"), np.random.default_rng(3))["x"]
    spectrum = np.abs(np.fft.rfft(sound - sound.mean(axis=1, keepdims=True), axis=1))
    peak_hz = spectrum.argmax(axis=1) * 16000 / 16000
    assert np.all((peak_hz >= 80) & (peak_hz <= 400 * 7))  # a harmonic of a pitch in 80-400 Hz
    assert np.all(spectrum.max(axis=1) > 20 * np.median(spectrum, axis=1))  # tonal, not noise


def test_config_accepts_the_kinds_and_refuses_others():
    assert config_from_table({"input-dist": "strokes"}, Config()).input_dist == "strokes"
    with pytest.raises(ValueError, match="smooth, strokes, harmonic"):
        config_from_table({"input-dist": "stroke"}, Config())


def pooled_gate_model():
    """A squeeze-excitation-like gate: units that fire when the image's mean brightness is off centre.

    relu(mean(x) - 0.2) and relu(-mean(x) - 0.2): the mean of 3x32x32 i.i.d. N(0, 1) values has std 0.018,
    so normal noise never switches either on, while images differ in brightness from one to the next."""
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 3, 32, 32])
    pooled = b.node("Flatten", [b.node("GlobalAveragePool", [x])])
    weight = np.array([[1.0, -1.0]] * 3, np.float32) / 3.0
    gate = b.node("Add", [b.node("MatMul", [pooled, b.const(weight)], name="se_fc"), b.const(np.float32([-0.2] * 2))])
    h = b.relu(gate, "se_relu")
    return b.build([b.node("MatMul", [h, b.const(np.ones((2, 1), np.float32))], name="head")])


def test_structured_inputs_keep_pooled_gates_alive_where_normal_noise_calls_them_dead(tmp_path):
    path = tmp_path / "se.onnx"
    onnx.save(pooled_gate_model(), path)
    normal = analyse(str(path), Config(select=("RL5",), input_dist="normal")).analyses.to_json()["probe"]
    assert normal["layers"]["se_relu"]["dead"] == 2  # the false alarm i.i.d. noise raises behind a pool
    smooth = analyse(str(path), Config(select=("RL5",), input_dist="smooth")).analyses.to_json()["probe"]
    assert smooth["layers"]["se_relu"]["dead"] == 0
    assert smooth["distribution"].startswith("smooth")
    strokes = analyse(str(path), Config(select=("RL5",), input_dist="strokes")).analyses.to_json()["probe"]
    assert strokes["layers"]["se_relu"]["dead"] <= 1  # pages are bright: the dark-side gate may stay off
    default = analyse(str(path), Config(select=("RL5",))).analyses.to_json()[
        "probe"
    ]  # structured: half pages, half smooth
    assert default["layers"]["se_relu"]["dead"] == 0 and default["distribution"].startswith("structured")


def test_structured_is_half_the_layouts_own_kind_and_half_smooth():
    # Pages are mostly bright paper; smooth noise is not: the two halves tell apart by their bright share.
    spec = InputSpec("x", "float32", (8, 1, 48, 200), batched=True, domain=((0.0, 1.0),))
    values = synthetic_batch([spec], 8, parse_distribution("structured"), np.random.default_rng(5))["x"]
    bright = (values > 0.72).reshape(8, -1).mean(axis=1)
    assert (bright[:4] > 0.5).all() and (bright[4:] < 0.5).all()
    one = InputSpec("x", "float32", (1, 1, 48, 200), batched=True, domain=((0.0, 1.0),))
    kinds = {
        bool(
            (synthetic_batch([one], 1, parse_distribution("structured"), np.random.default_rng(s))["x"] > 0.72).mean()
            > 0.5
        )
        for s in range(12)
    }
    assert kinds == {True, False}  # a batch of one is either kind
