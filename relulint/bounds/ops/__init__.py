"""Bound propagation through one ONNX op: a handler per op type.

A handler takes an ``Inputs`` (the node, its inputs' bounds and exact values) and returns one bound
per output, or None for an output it cannot bound. An op with no handler, or whose handler gives up
(a non-constant weight, an attribute it does not model), makes its outputs unbounded: the propagation
stays sound, it only proves less.

``base`` holds what every handler shares; ``linear``, ``elementwise``, ``pooling`` and ``movement`` register
their handlers in ``HANDLERS`` when they are imported, which this package does once.
"""

from __future__ import annotations

from relulint.bounds.ops import elementwise, linear, movement, pooling
from relulint.bounds.ops.base import HANDLERS, MAX_ELEMENTS, Inputs, Unsupported
from relulint.bounds.ops.elementwise import clip_limits

__all__ = [
    "HANDLERS",
    "MAX_ELEMENTS",
    "Inputs",
    "Unsupported",
    "clip_limits",
    "elementwise",
    "linear",
    "movement",
    "pooling",
]
