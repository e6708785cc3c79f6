"""Recurrent state carried between chunks of real data: the pairing rule, and a silero-vad-shaped model."""

from __future__ import annotations

import wave

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from relulint.config import Config
from relulint.engine import analyse
from relulint.preprocess import Preprocess
from relulint.probe.specs import state_output


@pytest.mark.parametrize(
    ("name", "outputs", "paired"),
    [
        ("state", ["output", "stateN"], "stateN"),  # silero-vad
        ("h", ["y", "hn", "cn"], "hn"),
        ("c", ["y", "hn", "cn"], "cn"),
        ("h0", ["y", "hn"], "hn"),
        ("h0", ["y", "h1"], "h1"),
        ("state_in", ["logits", "state_out"], "state_out"),
        ("in_cache", ["logits", "out_cache"], "out_cache"),
        ("past_key_values.0.key", ["logits", "present.0.key", "present.0.value"], "present.0.key"),
        ("past_value_3", ["logits", "present_value_3"], "present_value_3"),
        ("H", ["y", "Hn"], "Hn"),
        ("x", ["y"], None),
        ("state", ["output"], None),
        ("input", ["output"], None),  # "input" -> "output" is not a state: nothing pairs "in" inside a word
    ],
)
def test_state_inputs_pair_with_outputs_by_name(name, outputs, paired):
    assert state_output(name, outputs) == paired


def vad_model(window=64, hidden=4):
    """silero-vad's interface: input [B, T], state [2, B, H], sr a scalar; outputs output [B, 1], stateN.

    e = mean |input| per chunk; h = e + 0.9 * state[0] (a leaky accumulator over chunks); act = relu(h - t)
    with thresholds t = 0.2, 1, 3, 100. A loud chunk has e ~ 0.45: without the carried state h stays ~0.45
    and only unit 0 fires; carried over 20 chunks h climbs towards 4.5 and units 1 and 2 fire too.
    """
    thresholds = np.array([0.2, 1.0, 3.0, 100.0], np.float32)[:hidden]
    nodes = [
        helper.make_node("Abs", ["input"], ["abs"]),
        helper.make_node("ReduceMean", ["abs", "axes1"], ["energy"], keepdims=1),  # [B, 1]
        helper.make_node("MatMul", ["energy", "spread"], ["drive"]),  # [B, H]
        helper.make_node("Gather", ["state", "zero"], ["previous"], axis=0),  # [B, H]
        helper.make_node("Mul", ["previous", "decay"], ["kept"]),
        helper.make_node("Add", ["drive", "kept"], ["h"]),
        helper.make_node("Sub", ["h", "thresholds"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["act"], name="act"),
        helper.make_node("Cast", ["sr"], ["sr_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sr_float", "nothing"], ["sr_zero"]),
        helper.make_node("MatMul", ["act", "head"], ["logit"]),
        helper.make_node("Add", ["logit", "sr_zero"], ["logit_sr"]),
        helper.make_node("Sigmoid", ["logit_sr"], ["output"]),
        helper.make_node("Unsqueeze", ["h", "zero1"], ["h_first"]),
        helper.make_node("Gather", ["state", "one"], ["second"], axis=0),
        helper.make_node("Unsqueeze", ["second", "zero1"], ["second1"]),
        helper.make_node("Concat", ["h_first", "second1"], ["stateN"], axis=0),
    ]
    constants = {
        "axes1": np.array([1], np.int64),
        "spread": np.ones((1, hidden), np.float32),
        "zero": np.array(0, np.int64),
        "one": np.array(1, np.int64),
        "zero1": np.array([0], np.int64),
        "decay": np.array(0.9, np.float32),
        "thresholds": thresholds,
        "nothing": np.array(0.0, np.float32),
        "head": np.ones((hidden, 1), np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "vad",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "samples"]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", hidden]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", hidden]),
        ],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def loud_chunks(count=20, window=64, seed=0):
    return np.random.default_rng(seed).uniform(-0.9, 0.9, (count, window)).astype(np.float32)


def direct_positive(model, chunks, carry=True):
    """Per unit: was it ever positive, running the chunks one by one as a VAD is run."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(helper.make_tensor_value_info("act", TensorProto.FLOAT, None))
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 4), np.float32)
    ever = np.zeros(4, bool)
    for chunk in chunks:
        _, new_state, act = session.run(None, {"input": chunk[None], "state": state, "sr": np.array(16000)})
        ever |= (act > 0).any(axis=0)
        state = new_state if carry else state
    return ever


def probe(path, data, **config):
    result = analyse(str(path), Config(select=("RL5",), data=str(data), **config))
    assert result.error is None, result.error
    return result


def test_a_vad_model_is_probed_from_real_data_with_its_state_carried(tmp_path):
    path = tmp_path / "vad.onnx"
    model = vad_model()
    onnx.save(model, path)
    chunks = loud_chunks()
    np.savez(tmp_path / "speech.npz", input=chunks, sr=np.array(16000, np.int64))  # no state: it is carried
    result = probe(path, tmp_path / "speech.npz")
    probe_result = result.analyses.to_json()["probe"]
    assert probe_result["samples"] == 20 and probe_result["batch"] == 1
    layer = probe_result["layers"]["act"]
    ever = direct_positive(model, chunks)
    assert list(ever) == [True, True, True, False]
    assert layer["dead"] == 1 and [rate > 0 for rate in layer["positive_rate"]] == list(ever)
    assert not direct_positive(model, chunks, carry=False)[1]  # without the carry units 1 and 2 look dead
    (note,) = [n.message for n in result.notes if "recurrent state" in n.message]
    assert "'state' from 'stateN'" in note and "zeros with the first chunk of each data file" in note


def test_a_state_stored_in_the_data_is_used_as_it_is(tmp_path):
    path = tmp_path / "vad.onnx"
    onnx.save(vad_model(), path)
    chunks = loud_chunks()
    np.savez(tmp_path / "d.npz", input=chunks, state=np.zeros((2, 20, 4), np.float32), sr=np.array(16000))
    result = probe(path, tmp_path / "d.npz", batch=5)
    assert (
        result.analyses.to_json()["probe"]["batch"] == 5
        and result.analyses.to_json()["probe"]["layers"]["act"]["dead"] == 3
    )
    assert not [n for n in result.notes if "recurrent state" in n.message]


def test_the_state_starts_from_zeros_in_each_file(tmp_path):
    path = tmp_path / "vad.onnx"
    onnx.save(vad_model(), path)
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(4):  # four clips of 3 chunks: the accumulator never climbs past 0.45 * 2.71
        np.savez(folder / f"{i}.npz", input=loud_chunks(3, seed=i), sr=np.array(16000))
    layer = probe(path, folder).analyses.to_json()["probe"]["layers"]["act"]
    assert [rate > 0 for rate in layer["positive_rate"]] == [True, True, False, False]


def test_a_wav_file_feeds_a_vad_model_with_its_rate_and_carried_state(tmp_path):
    path = tmp_path / "vad.onnx"
    onnx.save(vad_model(), path)
    samples = (np.random.default_rng(0).uniform(-0.9, 0.9, 64 * 20) * 32767).astype("<i2")
    with wave.open(str(tmp_path / "speech.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(samples.tobytes())
    result = probe(path, tmp_path / "speech.wav", preprocess=Preprocess(window=64))
    assert result.analyses.to_json()["probe"]["samples"] == 20
    assert result.analyses.to_json()["probe"]["layers"]["act"]["dead"] == 1


# ---- a ReLU behind an LSTM or a Transpose: its units from the tensor's feature axis --------------------


def lstm_relu_model(hidden=6, features=3, opaque=False, seed=0):
    """x [N, T, F] -> Transpose -> LSTM -> Squeeze -> (opaque: a Reshape whose target shape inference cannot
    compute) -> Relu -> mean. Unit 5's input weights push it hard negative: dead on positive inputs."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5, (1, 4 * hidden, features)).astype(np.float32)
    r = rng.normal(0, 0.1, (1, 4 * hidden, hidden)).astype(np.float32)
    # unit 5's cell gate (gates in i, o, f, c order) sees only -5 * x: on inputs >= 0 its cell state never
    # rises above 0, so h = o * tanh(c) is never positive
    w[0, 3 * hidden + 5], r[0, 3 * hidden + 5] = -5.0, 0.0
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["xt", "W", "R"], ["Y", "Yh"], hidden_size=hidden),
        helper.make_node("Squeeze", ["Y", "one"], ["Ys"]),  # [T, N, H]
    ]
    last = "Ys"
    if opaque:  # [T, N, H] -> [T * N, H], H computed by a ReduceMax that data propagation does not follow
        nodes += [
            helper.make_node("Shape", ["Ys"], ["shape"]),
            helper.make_node("Slice", ["shape", "minus_one", "end"], ["h_dim"]),
            helper.make_node("ReduceMax", ["h_dim"], ["h_max"], keepdims=1),
            helper.make_node("Concat", ["minus_one", "h_max"], ["target"], axis=0),
            helper.make_node("Reshape", ["Ys", "target"], ["flat"]),
        ]
        last = "flat"
    nodes += [
        helper.make_node("Relu", [last], ["r"], name="act"),
        helper.make_node("ReduceMean", ["r", "zero"], ["y"], keepdims=0),
    ]
    constants = {
        "W": w,
        "R": r,
        "one": np.array([1], np.int64),
        "zero": np.array([0], np.int64),
        "minus_one": np.array([-1], np.int64),
        "end": np.array([2**62], np.int64),
    }
    if not opaque:
        del constants["minus_one"], constants["end"]
    graph = helper.make_graph(
        nodes,
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("opaque", [False, True])
def test_a_relu_after_an_lstm_gets_its_units_from_the_feature_axis(tmp_path, opaque):
    path = tmp_path / "lstm.onnx"
    model = lstm_relu_model(opaque=opaque)
    onnx.save(model, path)
    x = np.random.default_rng(1).uniform(0, 1, (40, 5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = probe(path, tmp_path / "x.npy", batch=8)
    (unit,) = result.layers
    assert unit["channel_axis"] == -1
    layer = result.analyses.to_json()["probe"]["layers"]["act"]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    (act,) = session.run(["r"], {"x": x})
    positive = (act > 0).reshape(-1, 6).sum(axis=0)
    assert layer["units"] == 6 and layer["dead"] == int((positive == 0).sum()) >= 1
    np.testing.assert_allclose(layer["positive_rate"], positive / (act.size // 6))
    assert not [n for n in result.notes if "does not measure" in n.message]


def test_a_relu_after_a_transpose_counts_the_channels_where_they_moved(tmp_path):
    from relulint.modelkit import ModelBuilder

    b = ModelBuilder(seed=0)
    x = b.input("x", ["N", 3, 5, 5])
    conv = b.conv(x, 3, 4, k=1, bias=np.array([0.0, 0.0, -100.0, 0.0], np.float32))
    nhwc = b.node("Transpose", [conv], perm=[0, 2, 3, 1])  # [N, 5, 5, 4]: the channels are last now
    act = b.relu(nhwc, name="act")
    path = tmp_path / "t.onnx"
    onnx.save(b.build([act]), path)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((16, 3, 5, 5)).astype(np.float32))
    result = probe(path, tmp_path / "x.npy")
    (unit,) = result.layers
    assert unit["channel_axis"] == -1 and unit["units"] == 4
    layer = result.analyses.to_json()["probe"]["layers"]["act"]
    assert layer["units"] == 4 and layer["dead"] == 1 and layer["positive_rate"][2] == 0
