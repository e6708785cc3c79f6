"""What the probe feeds the model: every sample of --data, samples spread over the whole source, --samples auto."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from relulint.config import Config, config_from_table
from relulint.engine import analyse
from relulint.modelkit import ModelBuilder
from relulint.probe.inputs import (
    AUTO_STABLE_BATCHES,
    SamplingStop,
    auto_min_samples,
    chosen_samples,
)


def run(path, select=("RL5",), **config):
    result = analyse(str(path), Config(select=select, **config))
    assert result.error is None, result.error
    return result


def threshold_model(thresholds):
    """One input feature; unit i is relu(x - thresholds[i])."""
    units = len(thresholds)
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 1])
    z = b.node(
        "Add", [b.node("MatMul", [x, b.const(np.ones((1, units), np.float32))]), b.const(-np.float32(thresholds))]
    )
    h = b.node("Relu", [z], name="act")
    return b.build([b.node("MatMul", [h, b.const(np.ones((units, 1), np.float32))], name="head")])


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(threshold_model([0.5, 0.0, 100.0]), path)  # unit 2 is dead on every input below 100
    return path


def test_with_data_every_sample_is_used_by_default(tmp_path, model):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((1000, 1), dtype=np.float32))
    probe = run(model, data=str(tmp_path / "x.npy")).analyses.to_json()["probe"]
    assert probe["samples"] == 1000 and probe["available"] == 1000 and probe["stopped"] == "data"
    assert probe["layers"]["act"]["dead"] == 1


def test_a_sample_cap_draws_across_the_whole_file(tmp_path, model):
    # Sorted data: the first half never switches unit 0 (x - 0.5) on; first-N sampling would call it dead.
    x = np.sort(np.random.default_rng(1).random(2000, dtype=np.float32)).reshape(-1, 1)
    np.save(tmp_path / "x.npy", x)
    probe = run(model, data=str(tmp_path / "x.npy"), samples=64).analyses.to_json()["probe"]
    assert probe["samples"] == 64 and probe["stopped"] == "cap"
    assert probe["layers"]["act"]["dead"] == 1  # only unit 2
    positive = np.asarray(probe["layers"]["act"]["positive_rate"])
    assert 0.3 < positive[0] < 0.7  # about half the drawn samples lie above 0.5


def test_chosen_samples_spread_over_every_file():
    chosen = chosen_samples([100, 300, 600], 100, seed=0)
    sizes = [c.size for c in chosen]
    assert sum(sizes) == 100 and all(size > 0 for size in sizes)
    assert all(np.all(np.diff(c) > 0) and c.max() < n for c, n in zip(chosen, [100, 300, 600]))
    assert sizes[2] > sizes[1] > sizes[0]  # in proportion to each file's size, at random
    assert chosen_samples([10, 20], 30, seed=0) == [None, None]  # a cap at or above the size: every sample
    assert chosen_samples([10, 20], 0, seed=0) == [None, None]


def test_samples_auto_stops_once_the_dead_units_settle(model):
    probe_run = run(model, input_dist="uniform:0,1")  # synthetic inputs: --samples auto by default
    probe = probe_run.analyses.to_json()["probe"]
    assert probe["stopped"] == "settled"
    assert auto_min_samples() == 299 and probe["samples"] >= 299
    assert probe["samples"] < 299 + (AUTO_STABLE_BATCHES + 2) * probe["batch"]  # dead set fixed from the start
    (note,) = [n.message for n in probe_run.notes if "--samples auto stopped" in n.message]
    assert f"{probe['samples']:,} samples" in note and "had not changed" in note
    assert probe["layers"]["act"]["dead"] == 1


def test_sampling_stop_rules():
    stop = SamplingStop(auto=True, deadline=None, started=0.0)
    reasons = [stop.after_batch(samples, dead=5, now=0.001 * samples) for samples in range(50, 400, 50)]
    # the bound reaches 1% at 299 samples; the dead count was stable long before
    assert reasons[:5] == [""] * 5 and reasons[5] == "settled"
    changing = SamplingStop(auto=True, deadline=None, started=0.0)
    assert all(changing.after_batch(s, dead=1000 - s, now=0.0) == "" for s in range(100, 1000, 100))
    timed = SamplingStop(auto=False, deadline=10.0, started=0.0)
    assert timed.after_batch(8, dead=1, now=4.0) == ""  # batches take 4 s: the next ends at 8 s
    assert timed.after_batch(16, dead=1, now=8.0) == "time"  # the next would end after the deadline


def test_samples_option_takes_auto_or_a_count():
    assert config_from_table({"samples": "auto"}, Config()).samples == "auto"
    assert config_from_table({"samples": 64}, Config()).samples == 64
    for bad in (0, -3, "many", True):
        with pytest.raises(ValueError):
            config_from_table({"samples": bad}, Config())


def test_default_dims_onnxruntime_rejects_are_retried_with_other_sizes(tmp_path):
    # The image is flattened to a fixed width that only a 256 x 256 side gives: 224 (the default) fails.
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 1, "H", "W"])
    x = b.node("MaxPool", [x], kernel_shape=[1, 1])  # hides the Reshape from the model's hints (probe.hints)
    flat = b.node("Reshape", [x, b.const(np.array([-1, 256 * 256], np.int64))])
    h = b.relu(b.gemm(flat, 256 * 256, 4, name="fc1"), "relu1")
    path = tmp_path / "m.onnx"
    onnx.save(b.build([b.gemm(h, 4, 2, name="head")]), path)
    result = run(path, samples=16)
    probe = result.analyses.to_json()["probe"]
    assert probe["samples"] == 16 and probe["layers"]["relu1"]["samples"] == 16
    notes = [n.message for n in result.notes]
    tried = "('x' dim 2 = 224, dim 3 = 224, then 'x' dim 2 = 48, dim 3 = 320, then 'x' dim 2 = 32, dim 3 = 320)"
    assert any(f"rejected the default dims {tried}" in n for n in notes), notes
    assert any("dynamic dims set by default ('x' dim 2 = 256, dim 3 = 256)" in n for n in notes), notes
    assert not any("dim 2 = 224" in n and "set by default" in n for n in notes)  # the failed try's note is gone
    assert not any("did not run" in n for n in notes)


def voice_like_model():
    """Inputs as a voice-activity detector has them: samples [N, 4], a recurrent state [2, N, 3] with its
    batch on axis 1, and a scalar sample rate given once for every sample."""
    from onnx import TensorProto, helper

    b = ModelBuilder(seed=3)
    x = b.input("input", ["batch", 4])
    b.inputs.append(helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, None, 3]))
    b.inputs.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
    pooled = b.node("ReduceSum", ["state", b.const(np.array([0], np.int64))], keepdims=0)  # [N, 3]
    rate = b.node("Cast", [b.node("Div", ["sr", b.const(np.array(16000, np.int64))])], to=TensorProto.FLOAT)
    z = b.node("Add", [b.node("MatMul", [x, b.const(np.array(WEIGHTS, np.float32))]), pooled])
    z = b.node("Add", [b.node("Mul", [z, rate]), b.const(np.array([0.0, -50.0, 0.5], np.float32))], name="fc")
    h = b.node("Relu", [z], name="act")
    return b.build([h, b.node("Identity", ["state"])])


WEIGHTS = [[1.0, 0.5, -1.0], [0.2, 0.1, 0.3], [-0.5, 0.4, 0.1], [0.3, -0.2, 0.2]]


def test_a_scalar_input_and_a_state_batched_on_axis_1_from_real_data(tmp_path):
    model = voice_like_model()
    path = tmp_path / "vad.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 4)).astype(np.float32)
    state = rng.standard_normal((2, 100, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", input=x, state=state, sr=np.array(16000, np.int64))
    probe = run(path, data=str(tmp_path / "d.npz"), batch=16).analyses.to_json()["probe"]
    assert probe["samples"] == 100 and probe["inputs"] == "data"
    z = x @ np.array(WEIGHTS, np.float32) + state.sum(axis=0) + np.array([0.0, -50.0, 0.5], np.float32)
    layer = probe["layers"]["act"]
    assert layer["dead"] == int(np.sum(~(z > 0).any(axis=0))) == 1
    assert np.allclose(layer["positive_rate"], (z > 0).mean(axis=0))
    # synthetic inputs fill the same layout: the state's batch follows --batch on axis 1
    assert run(path, samples=16, batch=8).analyses.to_json()["probe"]["samples"] == 16


def test_an_input_range_aware_probe_finds_units_dead_on_the_domain_that_normal_noise_misses(tmp_path):
    # What training on inputs in [0, 1] can leave: units whose weights are all negative and whose bias is
    # below zero never fire on the domain; normal noise, half of it negative, switches them on.
    rng = np.random.default_rng(4)
    weight = rng.uniform(0.2, 1.0, (8, 16)).astype(np.float32)
    weight[:, :6] *= -1  # units 0-5: w <= 0 on every feature
    bias = np.where(np.arange(16) < 6, -0.05, 0.1).astype(np.float32)
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 8])
    h = b.relu(b.node("Add", [b.node("MatMul", [x, b.const(weight)], name="fc1"), b.const(bias)]), "relu1")
    path = tmp_path / "m.onnx"
    onnx.save(b.build([b.node("MatMul", [h, b.const(np.ones((16, 1), np.float32))], name="head")]), path)
    inputs = rng.random((2000, 8), dtype=np.float32)  # the domain's inputs: the truth
    truth = int(np.sum(~((inputs @ weight + bias) > 0).any(axis=0)))
    assert truth == 6
    noise = run(path, input_dist="normal").analyses.to_json()["probe"]
    assert noise["layers"]["relu1"]["dead"] == 0  # N(0, 1) misses every one of them
    aware = run(path, input_ranges={"x": ((0.0, 1.0),)}, input_dist="normal").analyses.to_json()["probe"]
    assert aware["layers"]["relu1"]["dead"] == truth
    assert aware["distribution"].startswith("x uniform over [0, 1]")
    default = run(path, input_ranges={"x": ((0.0, 1.0),)}).analyses.to_json()[
        "probe"
    ]  # structured samples in the domain
    assert default["layers"]["relu1"]["dead"] == truth
    assert default["distribution"].startswith("x structured samples over [0, 1]")


def test_synthetic_values_stay_in_each_channels_domain():
    from relulint.probe.inputs import InputSpec, parse_distribution, synthetic_batch

    domain = ((0.0, 1.0), (-2.0, -1.0), (10.0, 20.0))
    spec = InputSpec("x", "float32", (4, 3, 5, 5), batched=True, domain=domain)
    values = synthetic_batch([spec], 64, parse_distribution("normal"), np.random.default_rng(0))["x"]
    assert values.shape == (64, 3, 5, 5) and values.dtype == np.float32
    for channel, (lo, hi) in enumerate(domain):
        part = values[:, channel]
        assert lo <= part.min() and part.max() <= hi and part.max() - part.min() > 0.9 * (hi - lo)


def probed_notes(tmp_path, dims, reshape_to, features, samples):
    """Probe a model that reshapes its image input ``[N, 1, *dims]`` to ``reshape_to`` before a ReLU layer
    of ``features`` inputs (onnxruntime rejects the dims the reshape does not fit); the probe's notes."""
    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 1, *dims])
    x = b.node("MaxPool", [x], kernel_shape=[1, 1])  # hides the Reshape from the model's hints (probe.hints)
    flat = b.node("Reshape", [x, b.const(np.array(reshape_to, np.int64))])
    if len(reshape_to) == 3:  # [N, rows, -1]: one value per row
        flat = b.node("ReduceMean", [flat], axes=[2], keepdims=0)
    h = b.relu(b.gemm(flat, features, 4, name="fc1"), "relu1")
    path = tmp_path / "m.onnx"
    onnx.save(b.build([b.gemm(h, 4, 2, name="head")]), path)
    result = run(path, samples=samples)
    notes = [n.message for n in result.notes]
    assert result.analyses.to_json().get("probe", {}).get("samples") == samples, notes
    assert not any("did not run" in n for n in notes)
    return notes


def test_a_text_line_recognizer_gets_a_line_shape(tmp_path):
    # An OCR recognizer's backbone must bring the height to one row (here: a Reshape that needs H == 48);
    # its width is free. Square sides all fail; the line shape 48 x 320 is among the tries.
    notes = probed_notes(tmp_path, ["H", "W"], [0, 48, -1], 48, samples=16)
    assert any("dynamic dims set by default ('x' dim 2 = 48, dim 3 = 320)" in n for n in notes), notes


def test_a_default_size_that_a_fixed_dim_makes_equal_to_an_earlier_try_is_not_tried_again(tmp_path):
    # Height fixed to 48, width free but flattened to 48 * 256: widths 224, 320 (twice in the size list) fail.
    notes = probed_notes(tmp_path, [48, "W"], [-1, 48 * 256], 48 * 256, samples=8)
    assert any("rejected the default dims ('x' dim 3 = 224, then 'x' dim 3 = 320)" in n for n in notes), notes


def test_the_defaulted_dims_note_names_the_input_and_the_shape_that_was_probed(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("audio", ["N", "T"])
    pooled = b.node("ReduceMean", [x], axes=[1], keepdims=1)  # [N, 1]
    path = tmp_path / "m.onnx"
    onnx.save(b.build([b.gemm(b.relu(b.gemm(pooled, 1, 4, name="fc1"), "relu1"), 4, 2, name="head")]), path)
    notes = [n.message for n in run(path, samples=8).notes]
    assert any("('audio' dim 1 = 32); set them with --input-shape audio=1x32" in n for n in notes), notes


def test_a_sequence_export_whose_data_gives_the_initial_state_once_is_probed_as_one_sequence(tmp_path):
    # A sequence export (silero's): input [time, features] with no batch axis, h/c [1, 1, H] given once in
    # the data as the initial state. The probe runs the file in chunks along time; the state must be
    # carried from chunk to chunk, or each chunk restarts the LSTM and the counts differ from one run.
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(2)
    hidden, features, steps = 6, 4, 64
    b = ModelBuilder(seed=0)
    x = b.input("input", ["time", features])
    b.inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, hidden]) for n in ("h", "c")]
    seq = b.node("Unsqueeze", [x, b.const(np.array([1], np.int64))])  # [time, 1, features]
    w = b.const(rng.normal(0, 1.0, (1, 4 * hidden, features)).astype(np.float32))
    r = b.const(rng.normal(0, 1.0, (1, 4 * hidden, hidden)).astype(np.float32))
    bias = np.zeros((1, 8 * hidden), np.float32)
    bias[0, :hidden] = np.linspace(-3, 3, hidden)  # input gates from nearly shut to open: a mix of states
    y = b.node("LSTM", [seq, w, r, b.const(bias), "", "h", "c"], name="lstm", outputs=3, hidden_size=hidden)
    b.nodes += [helper.make_node("Identity", [f"lstm_out{i}"], [name]) for i, name in ((1, "hn"), (2, "cn"))]
    shifted = b.node("Add", [b.node("Squeeze", [y, b.const(np.array([1, 2], np.int64))]), b.const(np.float32(-0.2))])
    act = b.node("Relu", [shifted], name="act")
    model = b.build([b.node("Identity", [act], name="out")])
    model.graph.output.extend(
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, hidden]) for n in ("hn", "cn")]
    )
    path = tmp_path / "seq.onnx"
    onnx.save(model, path)
    inputs = (np.cumsum(rng.normal(0, 0.5, (steps, features)), axis=0)).astype(np.float32)  # slow drift
    zeros = np.zeros((1, 1, hidden), np.float32)
    np.savez(tmp_path / "d.npz", input=inputs, h=zeros, c=zeros)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    whole = session.run([model.graph.output[0].name], {"input": inputs, "h": zeros, "c": zeros})[0]
    truth = int(np.sum(~(whole > 0).any(axis=0)))
    result = run(path, data=str(tmp_path / "d.npz"))
    notes = [n.message for n in result.notes]
    assert any("recurrent state carried between chunks ('h' from" in n for n in notes), notes
    assert result.analyses.to_json()["probe"]["layers"]["act"]["dead"] == truth
