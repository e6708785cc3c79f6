"""The reduction nodes of one probed layer: per-channel statistics of its activation's *output* as small
extra graph outputs (dead <=> the output is never > 0), so onnxruntime still fuses Conv+ReLU:

* 4-D (and other rank >= 3) outputs with channels on axis 1 are *pooled*: GlobalMaxPool,
  GlobalAveragePool of the output, of its square and of a 0/1 positive indicator. These
  ops run on onnxruntime's blocked (NCHWc) conv layout, so no activation is copied out of
  it; the indicator is a depthwise 1x1 Conv by 2^127 clipped to [0, 1], which onnxruntime
  also runs blocked. Results are [N, C, 1, 1] per-sample means.
* everything else is *reduced*: the output is viewed as [A, C, B] and ReduceMax/ReduceSum/
  ReduceSumSquare and a count of positives give [C] per batch.

Within a layer the nodes are written in the order onnxruntime should run them (see
``relulint.probe.instrument`` for the order across layers).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from relulint.loader import iter_graphs
from relulint.probe.protocol import POOLED, POOLED_STATS, REDUCED, STATS
from relulint.probe.shapes import TensorInfo

POSITIVE_SCALE = 2.0**127  # x * 2^127 >= 1 for every positive normal float32, and > 0 for denormals
BLOCK = 8  # channel multiple that onnxruntime's blocked conv layout needs (8 on AVX2, 16 on AVX-512)


@dataclass
class Additions:
    """New nodes, outputs and initializers of one (sub)graph."""

    graph: onnx.GraphProto
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    initializers: list[TensorProto] = field(default_factory=list)


class Names:
    """Fresh tensor and node names that collide with nothing in the model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        taken: set[str] = set()
        for graph in iter_graphs(model.graph):
            taken.update(t.name for t in graph.initializer)
            taken.update(v.name for v in (*graph.input, *graph.output, *graph.value_info))
            for node in graph.node:
                taken.add(node.name)
                taken.update(node.output)
        self.prefix = free_prefix("relulint_probe", taken)
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{self.prefix}/{self.count}/{stem}"


def free_prefix(stem: str, taken: set[str]) -> str:
    """A short prefix P such that no name in ``taken`` starts with ``P/`` (fresh names are ``P/N/...``).

    Candidates are ``stem``, ``stem_1``, ``stem_2``...: none of ``stem/``, ``stem_1/``... is a prefix of
    another, so each taken name rules out at most one, and one of the first len(taken) + 1 is free. Each is
    checked by bisection in the sorted names: O(n log n) in all, where growing the stem by one underscore
    per clash took 380 s on a name followed by 1.5 million underscores (and made every fresh name that long).
    """
    ordered = sorted(taken)
    count = 0
    while True:
        candidate = stem if count == 0 else f"{stem}_{count}"
        marker = candidate + "/"
        at = bisect.bisect_left(ordered, marker)
        if at == len(ordered) or not ordered[at].startswith(marker):
            return candidate
        count += 1


def add_reductions(
    additions: Additions,
    names: Names,
    tensor: str,
    axis: int,
    units: int,
    info: TensorInfo,
    per_sample: int | None,
    opset: int,
) -> tuple[str, list[str]]:
    """Append one layer's reduction nodes; return the tap kind and its output names (STATS order)."""
    nodes, inits = additions.nodes, additions.initializers
    kind = POOLED if per_sample else REDUCED
    stats = POOLED_STATS if kind == POOLED else STATS
    outputs = {stat: names.fresh(stat) for stat in stats}
    value = tensor
    if info.elem_type not in (0, TensorProto.FLOAT):  # 0: unknown, taken to be float
        value = names.fresh("float")
        nodes.append(helper.make_node("Cast", [tensor], [value], name=names.fresh("Cast"), to=TensorProto.FLOAT))
    if kind == POOLED:
        _pooled(nodes, inits, names, value, units, len(info.shape or ()), opset, outputs)
    else:
        nodes.append(helper.make_node("Shape", [tensor], [outputs["shape"]], name=names.fresh("Shape")))
        if axis == 1 and not units and info.rank is None:
            value = _at_least_rank_two(nodes, inits, names, value, opset)
        _reduced(nodes, inits, names, value, axis, units, opset, outputs)
    for stat in stats:
        elem = TensorProto.INT64 if stat == "shape" else TensorProto.FLOAT
        additions.outputs.append(helper.make_tensor_value_info(outputs[stat], elem, None))
    return kind, [outputs[stat] for stat in stats]


def _pooled(
    nodes: list[onnx.NodeProto],
    inits: list[TensorProto],
    names: Names,
    x: str,
    units: int,
    rank: int,
    opset: int,
    out: dict[str, str],
) -> None:
    # Written so that the square's transient is freed before the indicator's is made.
    square = names.fresh("square")
    nodes.append(helper.make_node("Mul", [x, x], [square], name=names.fresh("Mul")))
    nodes.append(helper.make_node("GlobalMaxPool", [x], [out["max"]], name=names.fresh("GlobalMaxPool")))
    nodes.append(helper.make_node("GlobalAveragePool", [x], [out["sum"]], name=names.fresh("GlobalAveragePool")))
    indicator = names.fresh("positive")
    if units % BLOCK == 0:
        weight = names.fresh("scale")
        inits.append(
            helper.make_tensor(
                weight, TensorProto.FLOAT, [units] + [1] * (rank - 1), np.full(units, POSITIVE_SCALE, np.float32)
            )
        )
        scaled = names.fresh("scaled")
        nodes.append(
            helper.make_node(
                "Conv", [x, weight], [scaled], name=names.fresh("Conv"), group=units, kernel_shape=[1] * (rank - 2)
            )
        )
        nodes.append(_clip(names, inits, scaled, indicator, opset))
    else:
        nodes.append(
            helper.make_node(
                "HardSigmoid", [x], [indicator], name=names.fresh("HardSigmoid"), alpha=POSITIVE_SCALE, beta=0.0
            )
        )
    nodes.append(
        helper.make_node("GlobalAveragePool", [indicator], [out["positive"]], name=names.fresh("GlobalAveragePool"))
    )
    nodes.append(helper.make_node("GlobalAveragePool", [square], [out["sumsq"]], name=names.fresh("GlobalAveragePool")))


def _clip(names: Names, inits: list[TensorProto], x: str, y: str, opset: int) -> onnx.NodeProto:
    if opset < 11:
        return helper.make_node("Clip", [x], [y], name=names.fresh("Clip"), min=0.0, max=1.0)
    low, high = names.fresh("zero"), names.fresh("one")
    inits.append(helper.make_tensor(low, TensorProto.FLOAT, [], [0.0]))
    inits.append(helper.make_tensor(high, TensorProto.FLOAT, [], [1.0]))
    return helper.make_node("Clip", [x, low, high], [y], name=names.fresh("Clip"))


def _at_least_rank_two(nodes: list[onnx.NodeProto], inits: list[TensorProto], names: Names, x: str, opset: int) -> str:
    """``x`` with two trailing axes of size 1, so that the [0, 0, -1] view below is valid whatever the rank
    (a rank >= 2 tensor keeps its values per unit; a lower rank is told by its shape and not counted)."""
    wider = names.fresh("wider")
    if opset >= 13:
        axes = names.fresh("axes")
        inits.append(helper.make_tensor(axes, TensorProto.INT64, [2], [-1, -2]))
        nodes.append(helper.make_node("Unsqueeze", [x, axes], [wider], name=names.fresh("Unsqueeze")))
    else:  # opset 11-12 (_countable_at_run_time)
        nodes.append(helper.make_node("Unsqueeze", [x], [wider], name=names.fresh("Unsqueeze"), axes=[-1, -2]))
    return wider


def _reduced(
    nodes: list[onnx.NodeProto],
    inits: list[TensorProto],
    names: Names,
    x: str,
    axis: int,
    units: int,
    opset: int,
    out: dict[str, str],
) -> None:
    view = names.fresh("view")
    target = names.fresh("target")
    if axis == -2:  # [..., C, Q] -> [-1, C, Q]: Q is read from the tensor at run time
        head, shape, last = names.fresh("head"), names.fresh("shape"), names.fresh("last")
        inits.append(helper.make_tensor(head, TensorProto.INT64, [2], [-1, units]))
        nodes.append(helper.make_node("Shape", [x], [shape], name=names.fresh("Shape")))
        nodes.append(_slice_last(names, inits, shape, last, opset))
        nodes.append(helper.make_node("Concat", [head, last], [target], name=names.fresh("Concat"), axis=0))
    elif axis == -1 and not units:  # [..., C] -> [-1, C, 1]: C is read from the tensor at run time
        head, tail, shape, last = names.fresh("head"), names.fresh("tail"), names.fresh("shape"), names.fresh("last")
        inits.append(helper.make_tensor(head, TensorProto.INT64, [1], [-1]))
        inits.append(helper.make_tensor(tail, TensorProto.INT64, [1], [1]))
        nodes.append(helper.make_node("Shape", [x], [shape], name=names.fresh("Shape")))
        nodes.append(_slice_last(names, inits, shape, last, opset))
        nodes.append(helper.make_node("Concat", [head, last, tail], [target], name=names.fresh("Concat"), axis=0))
    else:  # with units 0 (on axis 1), Reshape's 0 copies the dim: the count comes from the tensor
        dims = [0, units, -1] if axis == 1 else [-1, units, 1]
        inits.append(helper.make_tensor(target, TensorProto.INT64, [3], dims))
    nodes.append(helper.make_node("Reshape", [x, target], [view], name=names.fresh("Reshape")))
    positive, flags = names.fresh("positive"), names.fresh("flags")
    zero = names.fresh("zero")
    inits.append(helper.make_tensor(zero, TensorProto.FLOAT, [], [0.0]))
    nodes.append(helper.make_node("Greater", [view, zero], [flags], name=names.fresh("Greater")))
    nodes.append(helper.make_node("Cast", [flags], [positive], name=names.fresh("Cast"), to=TensorProto.FLOAT))
    for op, source, stat in (
        ("ReduceMax", view, "max"),
        ("ReduceSum", view, "sum"),
        ("ReduceSumSquare", view, "sumsq"),
        ("ReduceSum", positive, "positive"),
    ):
        nodes.append(_reduce(names, inits, op, source, out[stat], opset))


def _reduce(names: Names, inits: list[TensorProto], op: str, x: str, y: str, opset: int) -> onnx.NodeProto:
    """Reduce over axes 0 and 2 of an [A, C, B] view (axes became an input in opset 13 or 18)."""
    axes_as_input = opset >= 13 if op == "ReduceSum" else opset >= 18
    if axes_as_input:
        axes = names.fresh("axes")
        inits.append(helper.make_tensor(axes, TensorProto.INT64, [2], [0, 2]))
        return helper.make_node(op, [x, axes], [y], name=names.fresh(op), keepdims=0)
    return helper.make_node(op, [x], [y], name=names.fresh(op), keepdims=0, axes=[0, 2])


def _slice_last(names: Names, inits: list[TensorProto], x: str, y: str, opset: int) -> onnx.NodeProto:
    if opset < 10:
        return helper.make_node("Slice", [x], [y], name=names.fresh("Slice"), starts=[-1], ends=[2**62], axes=[0])
    starts, ends = names.fresh("starts"), names.fresh("ends")
    inits.append(helper.make_tensor(starts, TensorProto.INT64, [1], [-1]))
    inits.append(helper.make_tensor(ends, TensorProto.INT64, [1], [2**62]))
    return helper.make_node("Slice", [x, starts, ends], [y], name=names.fresh("Slice"))
