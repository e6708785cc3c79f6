"""Build small ONNX models in a few lines: for the tests, the examples and the benchmarks.

    b = ModelBuilder(seed=0)
    x = b.input("x", [1, 3, 32, 32])
    y = b.relu(b.batchnorm(b.conv(x, 16, 3)))
    model = b.build([y])

Weights default to He initialization; every helper takes explicit arrays too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEFAULT_OPSET = 17


class ModelBuilder:
    def __init__(self, seed: int = 0, opset: int = DEFAULT_OPSET, name: str = "model") -> None:
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.shapes: dict[str, list[int | str]] = {}
        self._counts: dict[str, int] = {}

    # ---- naming ------------------------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        index = self._counts.get(prefix, 0)
        self._counts[prefix] = index + 1
        return f"{prefix}_{index}"

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        name = name or self.fresh("w")
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str | None = None, outputs: int = 1, **attrs: Any) -> str:
        """Add a node; returns its first output (``<name>_out``)."""
        name = name or self.fresh(op)
        outs = [f"{name}_out"] + [f"{name}_out{i}" for i in range(1, outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs[0]

    def input(self, name: str, shape: Sequence[int | str], dtype: int = TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        self.shapes[name] = list(shape)
        return name

    # ---- weights -----------------------------------------------------------------------------
    def he(self, shape: Sequence[int], fan_in: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale * np.sqrt(2.0 / fan_in)).astype(np.float32)

    # ---- layers ------------------------------------------------------------------------------
    def conv(
        self,
        x: str,
        in_ch: int,
        out_ch: int,
        k: int = 3,
        stride: int = 1,
        bias: bool | np.ndarray = True,
        weight: np.ndarray | None = None,
        name: str | None = None,
        group: int = 1,
    ) -> str:
        w = weight if weight is not None else self.he([out_ch, in_ch // group, k, k], in_ch // group * k * k)
        inputs = [x, self.const(w)]
        if bias is not False:
            inputs.append(self.const(np.zeros(out_ch, np.float32) if bias is True else np.asarray(bias, np.float32)))
        return self.node(
            "Conv", inputs, name, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group
        )

    def batchnorm(
        self, x: str, ch: int, gamma: np.ndarray | None = None, beta: np.ndarray | None = None, name: str | None = None
    ) -> str:
        g = np.ones(ch, np.float32) if gamma is None else np.asarray(gamma, np.float32)
        b = np.zeros(ch, np.float32) if beta is None else np.asarray(beta, np.float32)
        mean, var = np.zeros(ch, np.float32), np.ones(ch, np.float32)
        return self.node(
            "BatchNormalization", [x, self.const(g), self.const(b), self.const(mean), self.const(var)], name
        )

    def gemm(
        self,
        x: str,
        fan_in: int,
        units: int,
        weight: np.ndarray | None = None,
        bias: np.ndarray | None = None,
        trans_b: bool = True,
        name: str | None = None,
    ) -> str:
        """Gemm as PyTorch exports Linear (transB=1: weight stored [units, fan_in])."""
        w = weight if weight is not None else self.he([units, fan_in], fan_in)
        if not trans_b:
            w = np.ascontiguousarray(w.T)
        b = np.zeros(units, np.float32) if bias is None else np.asarray(bias, np.float32)
        return self.node("Gemm", [x, self.const(w), self.const(b)], name, transB=int(trans_b))

    def linear(
        self,
        x: str,
        fan_in: int,
        units: int,
        weight: np.ndarray | None = None,
        bias: np.ndarray | None = None,
        name: str | None = None,
    ) -> str:
        """MatMul + Add, as PyTorch exports Linear on 3-D inputs (weight stored [fan_in, units])."""
        w = weight if weight is not None else self.he([units, fan_in], fan_in)
        y = self.node("MatMul", [x, self.const(np.ascontiguousarray(np.asarray(w, np.float32).T))], name)
        b = np.zeros(units, np.float32) if bias is None else np.asarray(bias, np.float32)
        return self.node("Add", [y, self.const(b)], f"{name}_bias" if name else None)

    def relu(self, x: str, name: str | None = None) -> str:
        return self.node("Relu", [x], name)

    def leaky_relu(self, x: str, alpha: float = 0.01, name: str | None = None) -> str:
        return self.node("LeakyRelu", [x], name, alpha=alpha)

    def add(self, a: str, b: str, name: str | None = None) -> str:
        return self.node("Add", [a, b], name)

    def global_pool_flatten(self, x: str) -> str:
        return self.node("Flatten", [self.node("GlobalAveragePool", [x])])

    # ---- model -------------------------------------------------------------------------------
    def build(
        self, outputs: Sequence[str], output_shapes: Sequence[Sequence[int | str] | None] | None = None
    ) -> onnx.ModelProto:
        shapes = output_shapes or [None] * len(outputs)
        graph = helper.make_graph(
            self.nodes,
            self.name,
            self.inputs,
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, s) for o, s in zip(outputs, shapes)],
            self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="relulint-modelkit"
        )
        model.ir_version = 8
        if any(s is None for s in shapes):  # the checker wants output shapes: take them from inference
            done = onnx.shape_inference.infer_shapes(model).graph
            inferred = {v.name: v for v in list(done.value_info) + list(done.output)}
            for output in model.graph.output:
                if not output.type.tensor_type.HasField("shape") and output.name in inferred:
                    output.type.CopyFrom(inferred[output.name].type)
        return model


def resnet_block(b: ModelBuilder, x: str, ch: int, prefix: str) -> str:
    """Conv-BN-ReLU-Conv-BN + identity shortcut, then ReLU (a basic ResNet block)."""
    y = b.relu(
        b.batchnorm(b.conv(x, ch, ch, bias=False, name=f"{prefix}_conv1"), ch, name=f"{prefix}_bn1"), f"{prefix}_relu1"
    )
    y = b.batchnorm(b.conv(y, ch, ch, bias=False, name=f"{prefix}_conv2"), ch, name=f"{prefix}_bn2")
    return b.relu(b.add(y, x, f"{prefix}_add"), f"{prefix}_relu2")


def mlp(
    b: ModelBuilder,
    x: str,
    widths: Sequence[int],
    bias_value: float = 0.0,
    weight_scale: float = 1.0,
    final_relu: bool = False,
    prefix: str = "fc",
) -> str:
    """Gemm+ReLU layers of the given widths (widths[0] is the input size); the last layer is linear."""
    y = x
    for index, (fan_in, units) in enumerate(zip(widths[:-1], widths[1:])):
        last = index == len(widths) - 2
        w = b.he([units, fan_in], fan_in, weight_scale)
        bias = np.full(units, 0.0 if last else bias_value, np.float32)
        y = b.gemm(y, fan_in, units, weight=w, bias=bias, name=f"{prefix}{index + 1}")
        if not last or final_relu:
            y = b.relu(y, f"{prefix}{index + 1}_relu")
    return y
