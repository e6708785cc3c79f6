"""The true dead units of a model on given inputs, measured with onnxruntime and numpy alone.

Independent of relulint's unit view and probe: the ReLU-family activations are found here from the
ONNX ops (Relu, LeakyRelu, PRelu, Elu, HardSwish, Clip with a lower bound of 0, and hard-swish written
out as ``x * Clip(x + 3, 0, 6) / 6``), every one of them becomes a graph output, the model runs on
every sample, and a unit is dead when its output is never > 0 anywhere (any sample, any position).
For the variants that pass a gradient below zero (hard-swish, LeakyRelu, ...) it also records whether
the output was ever non-zero: such a unit is dead in the gradient's sense only when it is always 0.
A unit is a channel: axis 1 below a Conv (or when no MatMul/Gemm/LSTM is found), the last axis below
a MatMul, Gemm or recurrent layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

PLAIN = {"Relu", "LeakyRelu", "PRelu", "Elu", "HardSwish", "ThresholdedRelu", "Celu", "Selu"}
PASS_THROUGH = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "BatchNormalization",
    "Identity",
    "Clip",
    "Relu",
    "Cast",
    "InstanceNormalization",
}
ZERO_BELOW = {"Relu", "Clip", "ThresholdedRelu"}  # constant 0 on the whole negative side
CONV = {"Conv", "ConvTranspose"}
LAST_AXIS = {"MatMul", "Gemm", "LSTM", "GRU", "RNN", "Transpose", "Squeeze", "Reshape", "Einsum"}


@dataclass
class TrueLayer:
    output: str  # tensor the unit is measured on
    op: str  # "Relu", "Clip", "HardSwish", "hard-swish (decomposed)", ...
    aliases: set[str] = field(default_factory=set)  # other tensors of the same unit (inside a decomposition)
    axis: int = 1
    pooled: bool = False  # fed by a global pooling a few ops up (a squeeze-excitation block)
    ever_positive: np.ndarray | None = None
    ever_nonzero: np.ndarray | None = None

    @property
    def units(self) -> int:
        return 0 if self.ever_positive is None else int(self.ever_positive.size)

    @property
    def dead(self) -> np.ndarray:
        """Never > 0: the brief's definition, and relulint's for every activation until it told variants apart."""
        return ~self.ever_positive

    @property
    def variant(self) -> bool:
        """A ReLU variant that passes a gradient below zero (hard-swish, LeakyRelu, Elu, ...), not ReLU/ReLU6."""
        return self.op not in ZERO_BELOW

    @property
    def no_gradient(self) -> np.ndarray:
        """Dead in the gradient's sense: never > 0 for ReLU/ReLU6; exactly 0 on every value for a variant."""
        return ~self.ever_nonzero if self.variant else self.dead


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _clip_bounds(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> tuple[float | None, float | None]:
    attrs = {a.name: a.f for a in node.attribute}
    if "min" in attrs or "max" in attrs:  # opset < 11
        return attrs.get("min"), attrs.get("max")

    def value(index: int) -> float | None:
        if len(node.input) > index and node.input[index] in constants:
            return float(np.asarray(constants[node.input[index]]).reshape(-1)[0])
        return None

    return value(1), value(2)


def _scalar(name: str, constants: dict[str, np.ndarray]) -> float | None:
    if name in constants and np.asarray(constants[name]).size == 1:
        return float(np.asarray(constants[name]).reshape(-1)[0])
    return None


def find_layers(model: onnx.ModelProto) -> list[TrueLayer]:
    """Every ReLU-family activation of the main graph, hard-swish decompositions folded into one unit."""
    constants = _constants(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def hard_swish_output(clip: onnx.NodeProto) -> tuple[str, set[str]] | None:
        """x * Clip(x + 3, 0, 6) [/ 6 or * 1/6]: the tensor that holds hard-swish(x), with its inner names."""
        add = producer.get(clip.input[0])
        if add is None or add.op_type != "Add":
            return None
        x = next((name for name in add.input if _scalar(name, constants) != 3.0), None)
        muls = [n for n in consumers.get(clip.output[0], []) if n.op_type == "Mul" and x in n.input]
        if not muls:
            return None
        out, inner = muls[0].output[0], {clip.output[0]}
        after = consumers.get(out, [])
        if len(after) == 1 and after[0].op_type in {"Div", "Mul"}:
            other = [name for name in after[0].input if name != out]
            scale = _scalar(other[0], constants) if other else None
            if scale is not None and np.isclose(scale if after[0].op_type == "Div" else 1 / scale, 6.0):
                inner.add(out)
                out = after[0].output[0]
        return out, inner

    layers = []
    for node in model.graph.node:
        if node.op_type in PLAIN:
            layers.append(TrueLayer(node.output[0], node.op_type))
        elif node.op_type == "Clip":
            low, _ = _clip_bounds(node, constants)
            if low is None or low != 0.0:
                continue
            decomposed = hard_swish_output(node)
            if decomposed is not None:
                layers.append(TrueLayer(decomposed[0], "hard-swish (decomposed)", decomposed[1]))
            else:
                layers.append(TrueLayer(node.output[0], "Clip"))
    for layer in layers:
        layer.axis = _unit_axis(layer.output, producer)
        layer.pooled = _pooled(layer.output, producer)
    return layers


def _pooled(tensor: str, producer: dict[str, onnx.NodeProto], depth: int = 4) -> bool:
    """Whether a GlobalAveragePool or ReduceMean sits within ``depth`` ops above the tensor."""
    frontier = [tensor]
    for _ in range(depth):
        nodes = [producer[name] for name in frontier if name in producer]
        if any(node.op_type in {"GlobalAveragePool", "ReduceMean", "GlobalMaxPool"} for node in nodes):
            return True
        frontier = [name for node in nodes for name in node.input]
    return False


def _unit_axis(tensor: str, producer: dict[str, onnx.NodeProto]) -> int:
    """1 below a Conv, -1 below a MatMul/Gemm/recurrent layer: the nearest such op up the chain decides."""
    seen = 0
    current = producer.get(tensor)
    while current is not None and seen < 12:
        if current.op_type in CONV:
            return 1
        if current.op_type in LAST_AXIS:
            return -1
        if current.op_type not in PASS_THROUGH and current.op_type not in PLAIN:
            return 1
        # Follow the data input: the first input that another node produces.
        current = next((producer[name] for name in current.input if name in producer), None)
        seen += 1
    return 1


def measure(model_path: Path, batches, batch_size: int = 8) -> list[TrueLayer]:
    """Run the model on every batch with each activation as an output; record which units were ever > 0."""
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    layers = find_layers(model)
    existing = {out.name for out in model.graph.output}
    for layer in layers:
        if layer.output not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(layer.output, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [layer.output for layer in layers]
    for feed in batches(batch_size):
        values = session.run(names, feed)
        for layer, value in zip(layers, values):
            value = np.asarray(value)
            axis = layer.axis % value.ndim
            per_unit = np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1)
            positive, nonzero = (per_unit > 0).any(axis=1), (per_unit != 0).any(axis=1)
            if layer.ever_positive is None:
                layer.ever_positive, layer.ever_nonzero = positive, nonzero
            else:
                layer.ever_positive |= positive
                layer.ever_nonzero |= nonzero
    return layers
