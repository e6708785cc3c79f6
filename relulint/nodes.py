"""A node of the graph model, and its attributes read against the op's schema.

``Node.attr`` returns the default for an attribute of the wrong type, so a string where an int belongs
cannot crash a rule.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relulint.lazy import onnx

if TYPE_CHECKING:
    from onnx import AttributeProto, NodeProto


@dataclass
class Node:
    id: str  # unique path
    op: str
    domain: str
    proto: NodeProto
    inputs: list[str]  # tensor ids; "" for an omitted optional input
    outputs: list[str]
    scope: str  # "" for the main graph, else the subgraph's path, e.g. "If_0/then"

    def attr(self, name: str, default: Any = None) -> Any:
        """The attribute's value; ``default`` when it is absent or of a type its op does not declare."""
        for attribute in self.proto.attribute:
            if attribute.name == name:
                return attribute_value(self.op, self.domain, attribute, default)
        return default

    @property
    def computed_inputs(self) -> list[str]:
        return [t for t in self.inputs if t]


@functools.lru_cache(maxsize=4096)
def _declared_attribute_type(op: str, domain: str, name: str) -> int | None:
    """The AttributeProto type the op's schema declares for an attribute, None when unknown."""
    try:
        schema = onnx.defs.get_schema(op, domain="" if domain == "ai.onnx" else domain)
    except Exception:  # no such op in this onnx (custom domain, typo, hostile model)
        return None
    attribute = schema.attributes.get(name)
    # onnx's stub omits the value of its pybind11 enums, which every AttrType has at run time
    return int(attribute.type.value) if attribute is not None else None  # type: ignore[attr-defined]


@functools.cache
def _default_types() -> tuple[tuple[type | tuple[type, ...], frozenset[int]], ...]:
    """Attribute types allowed for a default of each Python type (a function: onnx loads lazily)."""
    kinds = onnx.AttributeProto
    return (
        (bool, frozenset({kinds.INT})),
        (int, frozenset({kinds.INT})),
        (float, frozenset({kinds.FLOAT, kinds.INT})),
        (str, frozenset({kinds.STRING})),
        (bytes, frozenset({kinds.STRING})),
        ((list, tuple), frozenset({kinds.INTS, kinds.FLOATS, kinds.STRINGS})),
    )


def attribute_value(op: str, domain: str, attribute: AttributeProto, default: Any) -> Any:
    """The attribute's value when its type is the one expected, else ``default``.

    Expected is what the op's schema declares, or failing that, the kind of ``default``; an INT
    where a FLOAT is expected is read as a float.
    """
    declared = _declared_attribute_type(op, domain, attribute.name)
    allowed: set[int] | frozenset[int] | None
    if declared is not None:
        allowed = {declared, onnx.AttributeProto.INT} if declared == onnx.AttributeProto.FLOAT else {declared}
    else:
        allowed = next((types for kind, types in _default_types() if isinstance(default, kind)), None)
    if allowed is not None and attribute.type not in allowed:
        return default
    try:
        value = onnx.helper.get_attribute_value(attribute)
    except Exception:  # an UNDEFINED or unknown attribute type
        return default
    if declared == onnx.AttributeProto.FLOAT and attribute.type == onnx.AttributeProto.INT:
        return float(value)
    return value
