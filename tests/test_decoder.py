"""OPT-shaped decoders (ReLU feed-forward layers): the unit view, the static rules and the probe on token models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from relulint.chains import links
from relulint.cli import main
from relulint.config import Config
from relulint.context import Context
from relulint.decoderkit import DecoderShape, build_decoder, fc1_bias_name, relu_name, save_decoder
from relulint.engine import analyse
from relulint.graph import build_graph
from relulint.loader import load_model
from relulint.probe.inputs import parse_distribution, synthetic_batches
from relulint.probe.specs import input_specs
from relulint.units import find_layers

SMALL = DecoderShape(layers=3, d_model=32, ffn=128, heads=4, vocab=97, max_positions=64)
NARROW = DecoderShape(layers=2, d_model=16, ffn=64, heads=2, vocab=50, max_positions=32)
JSON_DIGITS = 1e-5  # the JSON report keeps 5 significant digits


def saved(tmp_path, shape=SMALL, name="decoder.onnx", **options):
    path = tmp_path / name
    onnx.save(build_decoder(shape, **options), path)
    return path


def relu_outputs(path, feeds: list[dict[str, np.ndarray]], names: list[str]) -> dict[str, list[np.ndarray]]:
    """The FFN ReLU outputs of each batch, from onnxruntime on the model with those tensors as extra outputs."""
    model = onnx.load(path)
    relus = {node.name: node.output[0] for node in model.graph.node if node.op_type == "Relu"}
    model.graph.output.extend(helper.make_tensor_value_info(relus[name], TensorProto.FLOAT, None) for name in names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = [relus[name] for name in names]
    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for feed in feeds:
        for name, array in zip(names, session.run(wanted, feed)):
            values[name].append(array)
    return values


def expected(values: list[np.ndarray]) -> tuple[int, float]:
    """(units never positive on any token of any sequence, share of zero outputs) of one layer."""
    flat = np.concatenate([v.reshape(-1, v.shape[-1]) for v in values])
    return int((~(flat > 0).any(axis=0)).sum()), float((flat <= 0).mean())


def probe_json(path, **config) -> dict:
    result = analyse(str(path), Config(select=("RL5",), **config))
    assert result.error is None, result.error
    return result.to_json()


# ---- the unit view and the static rules --------------------------------------------------------------


@pytest.mark.parametrize("fused", [True, False], ids=["LayerNormalization", "decomposed"])
def test_unit_view_finds_exactly_the_ffn_relus(tmp_path, fused):
    path = saved(tmp_path, fused_layernorm=fused)
    graph = build_graph(load_model(str(path)))
    layers = find_layers(graph)
    assert [layer.name for layer in layers] == [relu_name(i) for i in range(SMALL.layers)]
    for index, layer in enumerate(layers):
        assert layer.linear == f"/model/decoder/layers.{index}/fc1/MatMul"
        assert layer.weight_layout == "matmul_right"
        assert (layer.units, layer.fan_in, layer.channel_axis) == (SMALL.ffn, SMALL.d_model, -1)
        assert [term.tensor for term in layer.bias] == [fc1_bias_name(index)]
        assert layer.norm is None and not layer.residual  # the LayerNorm sits before fc1, not after it


@pytest.mark.parametrize("fused", [True, False], ids=["LayerNormalization", "decomposed"])
def test_static_rules_see_the_layernorm_in_front_of_each_ffn(tmp_path, fused):
    path = saved(tmp_path, DecoderShape(layers=8, d_model=32, ffn=128, heads=4, vocab=97), fused_layernorm=fused)
    graph = build_graph(load_model(str(path)))
    ctx = Context(loaded=graph.loaded, graph=graph, layers=find_layers(graph), config=Config())
    assert all(link.normalized_between for link in links(ctx).values())
    result = analyse(str(path), Config(select=("RL301", "RL401"), probe=False))
    assert result.findings == []


# ---- the probe on token inputs ---------------------------------------------------------------------


def test_synthetic_tokens_are_below_the_embedding_rows_and_masks_are_ones(tmp_path):
    graph = build_graph(load_model(str(saved(tmp_path))))
    specs = {spec.name: spec for spec in input_specs(graph, Config(), 4).specs}
    assert specs["input_ids"].int_high == SMALL.vocab and specs["input_ids"].constant is None
    assert specs["attention_mask"].constant == 1
    batch = next(synthetic_batches(list(specs.values()), 4, 4, parse_distribution("normal"), 0))
    assert batch["attention_mask"].shape == batch["input_ids"].shape == (4, 32)
    assert (batch["attention_mask"] == 1).all() and batch["input_ids"].max() < SMALL.vocab


@pytest.mark.parametrize("fused", [True, False], ids=["LayerNormalization", "decomposed"])
def test_synthetic_probe_equals_onnxruntime_on_the_same_token_batches(tmp_path, fused):
    path = saved(tmp_path, dead_units=[(1, 7)], fused_layernorm=fused)
    config = Config(samples=48, batch=16, seed=3)
    graph = build_graph(load_model(str(path)))
    specs = input_specs(graph, config, config.batch).specs
    feeds = list(synthetic_batches(specs, config.batch, config.samples, parse_distribution(config.input_dist), 3))
    names = [relu_name(i) for i in range(SMALL.layers)]
    values = relu_outputs(path, feeds, names)
    probe = probe_json(path, samples=48, batch=16, seed=3)["probe"]
    assert probe["samples"] == 48
    assert "input_ids uniform integers below 97, attention_mask all 1" in probe["distribution"]
    for name in names:
        dead, sparsity = expected(values[name])
        layer = probe["layers"][name]
        assert layer["samples"] == 48  # sequences, not tokens, are the samples of the confidence bound
        assert layer["dead"] == layer["never_positive"] == dead
        assert layer["sparsity"] == pytest.approx(sparsity, abs=JSON_DIGITS)
    assert probe["layers"][relu_name(1)]["positive_rate"][7] == 0.0  # the planted unit


def test_probe_with_token_data_equals_onnxruntime_and_finds_a_planted_dead_unit(tmp_path):
    path = saved(tmp_path, NARROW, dead_units=[(0, 5), (1, 60)])
    rng = np.random.default_rng(0)
    ids = rng.integers(0, NARROW.vocab, size=(40, 24), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[:10, 18:] = 0  # padded sequences
    np.savez(tmp_path / "tokens.npz", input_ids=ids, attention_mask=mask)
    names = [relu_name(i) for i in range(NARROW.layers)]
    values = relu_outputs(path, [{"input_ids": ids, "attention_mask": mask}], names)
    data = probe_json(path, data=str(tmp_path / "tokens.npz"), batch=8)
    probe = data["probe"]
    assert (probe["inputs"], probe["samples"]) == ("data", 40)
    for name, planted in zip(names, (5, 60)):
        dead, sparsity = expected(values[name])
        layer = probe["layers"][name]
        assert layer["dead"] == dead >= 1
        assert layer["positive_rate"][planted] == 0.0
        assert layer["sparsity"] == pytest.approx(sparsity, abs=JSON_DIGITS)
    by_layer = {unit["name"]: unit["metrics"] for unit in data["units"]}
    assert by_layer[names[0]]["sparsity"] == probe["layers"][names[0]]["sparsity"]


def test_token_data_without_a_mask_is_fed_ones(tmp_path):
    path = saved(tmp_path, NARROW)
    ids = np.random.default_rng(1).integers(0, NARROW.vocab, size=(12, 20), dtype=np.int64)
    np.savez(tmp_path / "ids.npz", input_ids=ids)
    names = [relu_name(i) for i in range(NARROW.layers)]
    values = relu_outputs(path, [{"input_ids": ids, "attention_mask": np.ones_like(ids)}], names)
    probe = probe_json(path, data=str(tmp_path / "ids.npz"))["probe"]
    assert probe["samples"] == 12
    for name in names:
        assert probe["layers"][name]["sparsity"] == pytest.approx(expected(values[name])[1], abs=JSON_DIGITS)


def test_the_mask_follows_the_token_ids_input_shape(tmp_path):
    graph = build_graph(load_model(str(saved(tmp_path))))
    specs = {s.name: s for s in input_specs(graph, Config(input_shapes={"input_ids": (2, 48)}), 2).specs}
    assert specs["attention_mask"].shape == specs["input_ids"].shape == (2, 48)


def test_reports_show_activation_sparsity(tmp_path):
    path = saved(tmp_path, NARROW)
    runner = CliRunner()
    text = runner.invoke(main, ["-v", "--samples", "16", str(path)])
    assert "probe: activation sparsity (share of zero outputs)" in text.output
    assert "over 2 layer(s)" in text.output
    html = tmp_path / "report.html"
    runner.invoke(main, ["--samples", "16", "--format", "html", "-o", str(html), str(path)])
    assert "Zero outputs" in html.read_text()
    report = json.loads(runner.invoke(main, ["--samples", "16", "--format", "json", str(path)]).output)
    assert 0.0 < report["models"][0]["probe"]["layers"][relu_name(0)]["sparsity"] < 1.0


def test_external_data_decoder_lints_like_the_inline_one(tmp_path):
    inline = saved(tmp_path, NARROW, name="inline.onnx")
    external = save_decoder(tmp_path / "external.onnx", NARROW)
    assert (tmp_path / "external.onnx.data").stat().st_size > 0
    a, b = (probe_json(p, samples=8, batch=8) for p in (inline, external))
    assert a["probe"]["layers"] == b["probe"]["layers"]
    assert [f["rule"] for f in a["findings"]] == [f["rule"] for f in b["findings"]]


def test_the_scale_of_an_embedding_table_is_streamed_exactly(tmp_path):
    from relulint.margins.propagation import constant_moments

    external = save_decoder(tmp_path / "external.onnx", NARROW)
    graph = build_graph(load_model(str(external)))
    table = "model.decoder.embed_tokens.weight"
    assert graph.initializers[table].data_location == TensorProto.EXTERNAL
    values = np.asarray(graph.constant(table), np.float64)
    assert constant_moments(graph, table) == pytest.approx((values.mean(), np.sqrt(np.mean(values**2))))


def test_the_instrumented_decoder_leaves_out_what_no_relu_needs(tmp_path):
    from relulint.probe.instrument import plan
    from relulint.probe.shapes import infer_shapes
    from relulint.probe.writer import write_model

    graph = build_graph(load_model(str(saved(tmp_path))))
    layers = find_layers(graph)
    instrumentation = plan(graph, layers, infer_shapes(graph, input_specs(graph, Config(), 2).specs))
    (tmp_path / "probe").mkdir()
    written = onnx.load(write_model(graph, instrumentation, tmp_path / "probe"))
    names = {node.name for node in written.graph.node}
    last = SMALL.layers - 1
    assert relu_name(last) in names and f"/model/decoder/layers.{last - 1}/fc2/MatMul" in names
    assert "/lm_head/MatMul" not in names and f"/model/decoder/layers.{last}/fc2/MatMul" not in names
    assert {value.name for value in written.graph.output} == {n for tap in instrumentation.taps for n in tap.outputs}
