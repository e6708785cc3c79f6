"""What every bound handler shares: the ``Inputs`` it reads, the registry, size limits and attribute helpers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from relulint.bounds import kernels
from relulint.bounds.interval import (
    Bound,
    Domain,
    exact,
)
from relulint.graph import Graph, Node

Result = list[Bound | None]
# Largest tensor bounded (elements of one sample): lo and hi are float64, so 32 MB each, and an op's
# temporaries are several times that (a chain of 3x3 Convs at 1990x1990 peaked at 500 MB; at 16 million
# elements, 1.8 GB). Larger tensors (and hostile shapes) are left unbounded instead of exhausting memory.
MAX_ELEMENTS = 4_000_000


class Unsupported(Exception):
    """This node (or this use of its op) is not modelled: its outputs become unbounded."""


@dataclass
class Inputs:
    node: Node
    graph: Graph
    bounds: dict[str, Bound]
    domain: Domain | None
    opset: int

    def has(self, index: int) -> bool:
        return index < len(self.node.inputs) and bool(self.node.inputs[index])

    def bound(self, index: int) -> Bound:
        tensor = self.node.inputs[index] if self.has(index) else ""
        if tensor in self.bounds:
            return self.bounds[tensor]
        value = self.graph.constant(tensor) if tensor and self.graph.is_constant(tensor) else None
        if value is None:
            raise Unsupported(f"input {index} is not bounded")
        return exact(value)

    def value(self, index: int) -> np.ndarray | None:
        """The input's exact value (constants, shapes), or None when it is computed."""
        if not self.has(index):
            return None
        tensor = self.node.inputs[index]
        if tensor in self.bounds:
            return self.bounds[tensor].value
        return self.graph.constant(tensor) if self.graph.is_constant(tensor) else None

    def weight(self, index: int) -> np.ndarray:
        value = self.value(index)
        if value is None:
            raise Unsupported(f"input {index} is not a constant")
        return np.asarray(value, np.float64)

    def ints(self, index: int, attribute: str | None = None) -> list[int] | None:
        """An int list given as an input (newer opsets) or an attribute (older ones)."""
        if self.has(index):
            value = self.value(index)
            if value is None:
                raise Unsupported(f"input {index} is not a constant")
            return [int(v) for v in np.asarray(value).reshape(-1)]
        if attribute is not None:
            given = self.node.attr(attribute)
            return None if given is None else [int(v) for v in given]
        return None

    def required_ints(self, index: int, attribute: str | None = None) -> list[int]:
        """``ints``, for a list the op cannot do without (a malformed node may lack it)."""
        values = self.ints(index, attribute)
        if values is None:
            raise Unsupported(f"{self.node.op} without its input {index}")
        return values

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attr(name, default)


Handler = Callable[[Inputs], Result]
HANDLERS: dict[str, Handler] = {}


def handles(*ops: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = handler
        return handler

    return register


def axis_index(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


def check_size(shape: Iterable[int], what: str = "output") -> None:
    """Refuse to build a bound larger than MAX_ELEMENTS (or with a negative dimension)."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise Unsupported(f"{what} shape {dims} has a negative dimension")
    if math.prod(dims) > MAX_ELEMENTS:
        raise Unsupported(f"{what} of {math.prod(dims):,} elements is over the {MAX_ELEMENTS:,} bounded")


def window_attributes(inp: Inputs, spatial: tuple[int, ...], kernel: Iterable[int] | None) -> kernels.Window:
    """Conv/pool geometry, refusing what ONNX forbids (zero strides, negative pads) and huge outputs."""
    n = len(spatial)
    kernel = list(kernel or [])
    strides, dilations, pads = inp.attr("strides"), inp.attr("dilations"), inp.attr("pads")
    if len(kernel) != n or any(k < 1 for k in kernel):
        raise Unsupported(f"kernel {kernel} does not fit {n} spatial axes")
    for name, values, size in (("strides", strides, n), ("dilations", dilations, n), ("pads", pads, 2 * n)):
        if values is not None and (len(values) != size or any(v < (0 if name == "pads" else 1) for v in values)):
            raise Unsupported(f"invalid {name} {list(values)}")
    if pads is not None:
        check_size([s + pads[i] + pads[i + n] for i, s in enumerate(spatial)], "padded input")
    geometry = kernels.window(
        spatial,
        kernel,
        strides,
        dilations,
        pads,
        attribute_text(inp.attr("auto_pad", "NOTSET")),
        bool(inp.attr("ceil_mode", 0)),
    )
    check_size(geometry.out, "window output")
    return geometry


def scalar_value(value: np.ndarray | None) -> float | None:
    if value is None or np.size(value) != 1:
        return None
    return float(np.asarray(value).reshape(-1)[0])


def attribute_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
