"""OPT-shaped decoders (ReLU feed-forward layers) laid out the way ``torch.onnx.export`` writes them.

For the tests (a few layers, d_model 16-32, weights inline) and the benchmarks (OPT-125M and OPT-1.3B
shapes, weights as external data written in blocks, so that generating 5 GB needs a few tens of MB):

    input_ids [batch, seq] int64 -> Gather(embed_tokens) + Gather(embed_positions, cumsum(mask) * mask + 1)
    per layer:  h += out_proj(attention(LayerNorm(h)))      causal + padding mask, additive, as OPT does
                h += fc2(Relu(fc1(LayerNorm(h))))           fc1 [d, ffn], fc2 [ffn, d], MatMul + Add
    LayerNorm(h) -> MatMul(lm_head [d, vocab]) -> logits [batch, seq, vocab]

LayerNorm is either the fused ``LayerNormalization`` (opset 17) or the decomposed ReduceMean/Sub/Pow/
Sqrt/Div/Mul/Add chain older exports produce. Weights are N(0, 0.02) like OPT's initialization, biases
zero; ``dead_units`` plants fc1 biases far below zero.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnx
from numpy.typing import ArrayLike, DTypeLike
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
INIT_STD = 0.02  # OPT's init_std
DEAD_BIAS = -100.0  # an fc1 bias this low keeps the unit's pre-activation below zero on every token
POSITION_OFFSET = 2  # OPT's learned positional embedding has two extra rows in front
MASK_MIN = float(np.finfo(np.float32).min)  # what HF's OPT adds where attention is masked out
BLOCK_BYTES = 32 * 1024**2  # random weights are drawn and written this much at a time
ALIGN = 64 * 1024  # external tensors start on this boundary (onnxruntime maps aligned data)


@dataclass(frozen=True)
class DecoderShape:
    layers: int
    d_model: int
    ffn: int
    heads: int
    vocab: int = 50272
    max_positions: int = 2048

    @property
    def parameters(self) -> int:
        d = self.d_model
        per_layer = 4 * (d * d + d) + 2 * d * self.ffn + self.ffn + d + 4 * d
        embeddings = self.vocab * d + (self.max_positions + POSITION_OFFSET) * d
        return self.layers * per_layer + embeddings + 2 * d + d * self.vocab


OPT_125M = DecoderShape(layers=12, d_model=768, ffn=3072, heads=12)
OPT_1_3B = DecoderShape(layers=24, d_model=2048, ffn=8192, heads=32)


def relu_name(layer: int) -> str:
    """The node id of layer ``layer``'s FFN ReLU (the layer's name in relulint's reports)."""
    return f"/model/decoder/layers.{layer}/activation_fn/Relu"


def fc1_bias_name(layer: int) -> str:
    return f"model.decoder.layers.{layer}.fc1.bias"


class _Weights:
    """Initializers, inline or appended to one external data file in row blocks (bounded memory)."""

    def __init__(self, rng: np.random.Generator, data: BinaryIO | None, location: str) -> None:
        self.rng = rng
        self.data = data
        self.location = location
        self.tensors: list[TensorProto] = []

    def normal(self, name: str, shape: Sequence[int], std: float = INIT_STD) -> str:
        rows = int(shape[0])
        per_row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        step = max(1, BLOCK_BYTES // (4 * per_row))

        def blocks() -> Iterator[np.ndarray]:
            for start in range(0, rows, step):
                block = self.rng.standard_normal((min(step, rows - start), per_row), dtype=np.float32)
                block *= np.float32(std)
                yield block

        return self._add(name, shape, blocks())

    def array(self, name: str, values: np.ndarray) -> str:
        return self._add(name, values.shape, iter([np.ascontiguousarray(values, np.float32)]))

    def _add(self, name: str, shape: Sequence[int], blocks: Iterator[np.ndarray]) -> str:
        nbytes = 4 * int(np.prod(shape, dtype=np.int64))
        if self.data is None or nbytes < 1024:
            values = np.concatenate([b.reshape(-1) for b in blocks]).reshape(shape)
            self.tensors.append(numpy_helper.from_array(values, name))
            return name
        offset = self.data.seek(0, os.SEEK_END)
        if offset % ALIGN:
            self.data.write(b"\0" * (ALIGN - offset % ALIGN))
            offset = self.data.tell()
        for block in blocks:
            self.data.write(block.astype("<f4", copy=False).tobytes())
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.tensors.append(tensor)
        return name


class _Graph:
    def __init__(self, weights: _Weights) -> None:
        self.w = weights
        self.nodes: list[onnx.NodeProto] = []
        self.consts = 0

    def op(self, op: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        output = f"{name}_output_0"
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=name, **attrs))
        return output

    def const(self, value: ArrayLike, dtype: DTypeLike = np.float32) -> str:
        self.consts += 1
        name = f"/Constant_{self.consts}_output_0"
        self.w.tensors.append(numpy_helper.from_array(np.array(value, dtype), name))
        return name

    def linear(self, x: str, prefix: str, fan_in: int, units: int, bias: np.ndarray | None = None) -> str:
        """``torch.nn.Linear`` as exported: MatMul by the transposed weight, then Add of the bias."""
        weight = self.w.normal(f"onnx::MatMul_{prefix}.weight", (fan_in, units))
        bias_name = self.w.array(f"{prefix}.bias", np.zeros(units, np.float32) if bias is None else bias)
        scope = "/" + prefix.replace(".", "/").replace("/layers/", "/layers.")
        y = self.op("MatMul", [x, weight], f"{scope}/MatMul")
        return self.op("Add", [bias_name, y], f"{scope}/Add")

    def layer_norm(self, x: str, prefix: str, d: int, fused: bool) -> str:
        gamma = self.w.array(f"{prefix}.weight", np.ones(d, np.float32))
        beta = self.w.array(f"{prefix}.bias", np.zeros(d, np.float32))
        scope = "/" + prefix.replace(".", "/").replace("/layers/", "/layers.")
        if fused:
            return self.op("LayerNormalization", [x, gamma, beta], f"{scope}/LayerNormalization", axis=-1, epsilon=1e-5)
        mean = self.op("ReduceMean", [x], f"{scope}/ReduceMean", axes=[-1])
        centered = self.op("Sub", [x, mean], f"{scope}/Sub")
        square = self.op("Pow", [centered, self.const(2.0)], f"{scope}/Pow")
        variance = self.op("ReduceMean", [square], f"{scope}/ReduceMean_1", axes=[-1])
        spread = self.op("Sqrt", [self.op("Add", [variance, self.const(1e-5)], f"{scope}/Add")], f"{scope}/Sqrt")
        normed = self.op("Div", [centered, spread], f"{scope}/Div")
        return self.op("Add", [self.op("Mul", [normed, gamma], f"{scope}/Mul"), beta], f"{scope}/Add_1")


def _masks(g: _Graph) -> tuple[str, str]:
    """(position ids, additive attention mask [batch, 1, seq, seq]) from attention_mask, as OPT builds them."""
    cumsum = g.op("CumSum", ["attention_mask", g.const(1, np.int64)], "/model/decoder/embed_positions/CumSum")
    kept = g.op("Mul", [cumsum, "attention_mask"], "/model/decoder/embed_positions/Mul")
    positions = g.op("Add", [kept, g.const(POSITION_OFFSET - 1, np.int64)], "/model/decoder/embed_positions/Add")
    padding = g.op("Cast", ["attention_mask"], "/model/decoder/Cast", to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const(1.0), padding], "/model/decoder/Sub")
    padding_add = g.op("Mul", [inverted, g.const(MASK_MIN)], "/model/decoder/Mul")
    padding_add = g.op("Unsqueeze", [padding_add, g.const([1, 2], np.int64)], "/model/decoder/Unsqueeze")
    shape = g.op("Shape", ["input_ids"], "/model/decoder/Shape")
    length = g.op("Gather", [shape, g.const(1, np.int64)], "/model/decoder/Gather", axis=0)
    steps = g.op("Range", [g.const(0, np.int64), length, g.const(1, np.int64)], "/model/decoder/Range")
    rows = g.op("Unsqueeze", [steps, g.const([1], np.int64)], "/model/decoder/Unsqueeze_1")
    cols = g.op("Unsqueeze", [steps, g.const([0], np.int64)], "/model/decoder/Unsqueeze_2")
    future = g.op("Greater", [cols, rows], "/model/decoder/Greater")
    causal = g.op("Where", [future, g.const(MASK_MIN), g.const(0.0)], "/model/decoder/Where")
    return positions, g.op("Add", [padding_add, causal], "/model/decoder/Add")


def _attention(g: _Graph, x: str, index: int, shape: DecoderShape, mask: str) -> str:
    d, heads = shape.d_model, shape.heads
    head_dim = d // heads
    prefix = f"model.decoder.layers.{index}.self_attn"
    scope = f"/model/decoder/layers.{index}/self_attn"
    split = g.const([0, 0, heads, head_dim], np.int64)
    q = g.op("Mul", [g.linear(x, f"{prefix}.q_proj", d, d), g.const(head_dim**-0.5)], f"{scope}/Mul")
    k = g.linear(x, f"{prefix}.k_proj", d, d)
    v = g.linear(x, f"{prefix}.v_proj", d, d)
    q = g.op("Transpose", [g.op("Reshape", [q, split], f"{scope}/Reshape")], f"{scope}/Transpose", perm=[0, 2, 1, 3])
    k = g.op(
        "Transpose", [g.op("Reshape", [k, split], f"{scope}/Reshape_1")], f"{scope}/Transpose_1", perm=[0, 2, 3, 1]
    )
    v = g.op(
        "Transpose", [g.op("Reshape", [v, split], f"{scope}/Reshape_2")], f"{scope}/Transpose_2", perm=[0, 2, 1, 3]
    )
    scores = g.op("Add", [g.op("MatMul", [q, k], f"{scope}/MatMul"), mask], f"{scope}/Add")
    # HF's OPT clamps the masked scores at float32's minimum (a sum of two minima would be -inf).
    scores = g.op("Max", [scores, g.const(MASK_MIN)], f"{scope}/Max")
    probs = g.op("Softmax", [scores], f"{scope}/Softmax", axis=-1)
    context = g.op(
        "Transpose", [g.op("MatMul", [probs, v], f"{scope}/MatMul_1")], f"{scope}/Transpose_3", perm=[0, 2, 1, 3]
    )
    context = g.op("Reshape", [context, g.const([0, 0, d], np.int64)], f"{scope}/Reshape_3")
    return g.linear(context, f"{prefix}.out_proj", d, d)


def _ffn(g: _Graph, x: str, index: int, shape: DecoderShape, dead: Sequence[int]) -> str:
    prefix = f"model.decoder.layers.{index}"
    bias = np.zeros(shape.ffn, np.float32)
    bias[list(dead)] = DEAD_BIAS
    hidden = g.linear(x, f"{prefix}.fc1", shape.d_model, shape.ffn, bias)
    hidden = g.op("Relu", [hidden], relu_name(index))
    return g.linear(hidden, f"{prefix}.fc2", shape.ffn, shape.d_model)


def build_decoder(
    shape: DecoderShape,
    *,
    fused_layernorm: bool = True,
    dead_units: Sequence[tuple[int, int]] = (),
    seed: int = 0,
    data: BinaryIO | None = None,
    location: str = "",
) -> onnx.ModelProto:
    """The decoder as a model; with ``data`` (an open binary file, its name ``location`` relative to the
    model), tensors of 1 KB and more are appended to it as external data. ``dead_units``: (layer, unit)
    pairs whose fc1 bias is DEAD_BIAS."""
    weights = _Weights(np.random.default_rng(seed), data, location)
    g = _Graph(weights)
    d = shape.d_model
    tokens = weights.normal("model.decoder.embed_tokens.weight", (shape.vocab, d))
    table = weights.normal("model.decoder.embed_positions.weight", (shape.max_positions + POSITION_OFFSET, d))
    positions, mask = _masks(g)
    h = g.op("Gather", [tokens, "input_ids"], "/model/decoder/embed_tokens/Gather")
    h = g.op(
        "Add", [h, g.op("Gather", [table, positions], "/model/decoder/embed_positions/Gather")], "/model/decoder/Add_1"
    )
    for index in range(shape.layers):
        prefix = f"model.decoder.layers.{index}"
        x = g.layer_norm(h, f"{prefix}.self_attn_layer_norm", d, fused_layernorm)
        h = g.op("Add", [h, _attention(g, x, index, shape, mask)], f"/model/decoder/layers.{index}/Add")
        x = g.layer_norm(h, f"{prefix}.final_layer_norm", d, fused_layernorm)
        dead = [unit for layer, unit in dead_units if layer == index]
        h = g.op("Add", [h, _ffn(g, x, index, shape, dead)], f"/model/decoder/layers.{index}/Add_1")
    h = g.layer_norm(h, "model.decoder.final_layer_norm", d, fused_layernorm)
    head = weights.normal("onnx::MatMul_lm_head.weight", (d, shape.vocab))
    logits = g.op("MatMul", [h, head], "/lm_head/MatMul")
    graph = helper.make_graph(
        g.nodes,
        "opt_decoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "sequence_length"]),
        ],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch_size", "sequence_length", shape.vocab])],
        weights.tensors,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="relulint.decoderkit"
    )
    model.ir_version = 8
    return model


def save_decoder(
    path: Path,
    shape: DecoderShape,
    *,
    fused_layernorm: bool = True,
    dead_units: Sequence[tuple[int, int]] = (),
    seed: int = 0,
) -> Path:
    """Write the decoder to ``path`` with its weights in ``path.data`` (streamed: bounded memory)."""
    data_path = path.with_name(path.name + ".data")
    with open(data_path, "wb") as data:
        model = build_decoder(
            shape,
            fused_layernorm=fused_layernorm,
            dead_units=dead_units,
            seed=seed,
            data=data,
            location=data_path.name,
        )
    path.write_bytes(model.SerializeToString())
    return path
