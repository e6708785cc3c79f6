"""Protobuf wire-format surgery: parse a large model without copying its weights.

``onnx.load`` copies every initializer's ``raw_data`` into the parsed message. For a large model
with inline weights that doubles its memory (the file's bytes, then the message) and makes the
onnxruntime child of the probe hold a second copy beside the parent's. Instead, the loader parses
a *skeleton*: the same bytes with each large ``raw_data`` field of a main-graph initializer
replaced by an external-data reference to the model file itself, at the offset where the bytes
already lie. ``relulint.tensors`` then reads them like any external data.

Anything unexpected in the bytes (a malformed varint, a group, a repeated graph field, a tensor
that already has a data location) makes ``strip_large_raw_data`` return None, and the loader parses
the file as it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NamedTuple

MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
TENSOR_DATA_TYPE = 2
TENSOR_RAW_DATA = 9
TENSOR_EXTERNAL_DATA = 13
TENSOR_DATA_LOCATION = 14
EXTERNAL = 1
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
# Element types whose raw bytes are one fixed-size element after another (memory-mappable):
# FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, FLOAT16, DOUBLE, UINT32, UINT64, BFLOAT16.
MAPPABLE_TYPES = {1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 16}


class Malformed(Exception):
    pass


class Field(NamedTuple):  # a tuple, not a dataclass: a graph of 100,000 nodes yields as many
    number: int
    wire_type: int
    start: int  # first byte of the tag
    value_start: int  # first byte of the payload (after the length, for LENGTH fields)
    end: int  # one past the last byte
    value: int = 0  # the number, for VARINT fields


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` (before ``end``) and the position after it; ``Malformed`` when there is none.
    The one varint decoder of relulint (the loader's depth walk, the skeleton surgery, the -o checks)."""
    if pos < end and data[pos] < 0x80:  # one byte: most tags and lengths of a graph of many small nodes
        return data[pos], pos + 1
    value = shift = 0
    for _ in range(10):
        if pos >= end:
            raise Malformed
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise Malformed


def message_depth(data: bytes, descriptor: Any, limit: int) -> int | None:
    """How deep the protobuf messages in ``data`` nest (1 = no submessage), or None beyond ``limit``.

    ``descriptor`` is the outer message's protobuf descriptor. Walks the wire format with an explicit stack,
    descending only into fields the schema declares as messages; scalars, strings and unknown fields are
    skipped by their length. Malformed bytes end the walk where they start (the real parser reports them).
    """
    deepest = 1
    # (end offset, descriptor) of each message being walked; the position is shared
    stack: list[tuple[int, Any]] = [(len(data), descriptor)]
    position = 0
    try:
        while stack:
            end, message = stack[-1]
            if position >= end:
                stack.pop()
                continue
            key, position = read_varint(data, position, end)
            number, wire_type = key >> 3, key & 7
            if wire_type == VARINT:
                _, position = read_varint(data, position, end)
            elif wire_type == FIXED64:
                position += 8
            elif wire_type == FIXED32:
                position += 4
            elif wire_type == LENGTH:
                length, position = read_varint(data, position, end)
                if position + length > end:
                    return deepest
                field = message.fields_by_number.get(number)
                if field is not None and field.message_type is not None:
                    stack.append((position + length, field.message_type))
                    deepest = max(deepest, len(stack))
                    if deepest > limit:
                        return None
                    continue
                position += length
            else:  # groups (3, 4) and invalid wire types: ONNX uses none
                return deepest
    except Malformed:
        pass
    return deepest


def iter_fields(data: bytes, start: int, end: int) -> Iterator[Field]:
    pos = start
    while pos < end:
        field = field_at(data, pos, end)
        if field.end > end:
            raise Malformed
        yield field
        pos = field.end


def field_at(data: bytes, pos: int, end: int, offset: int = 0) -> Field:
    """The field whose tag starts at ``pos`` of ``data`` (which ``end`` bounds); its positions are
    ``offset`` further on (``data`` being a window of a larger message). ``Malformed`` when there is none."""
    key, value_start = read_varint(data, pos, end)
    number, wire_type = key >> 3, key & 7
    value = 0
    if wire_type == VARINT:
        value, field_end = read_varint(data, value_start, end)
    elif wire_type == FIXED64:
        field_end = value_start + 8
    elif wire_type == FIXED32:
        field_end = value_start + 4
    elif wire_type == LENGTH:
        length, value_start = read_varint(data, value_start, end)
        field_end = value_start + length
    else:  # groups (3, 4) are not used by ONNX; anything else is corrupt
        raise Malformed
    if number == 0:
        raise Malformed
    return Field(number, wire_type, pos + offset, value_start + offset, field_end + offset, value)


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_field(number: int, payload: bytes) -> bytes:
    return encode_varint(number << 3 | LENGTH) + encode_varint(len(payload)) + payload


def _entry(key: str, value: str) -> bytes:
    """A StringStringEntryProto (key = 1, value = 2) as a TensorProto.external_data field."""
    body = length_field(1, key.encode()) + length_field(2, value.encode())
    return length_field(TENSOR_EXTERNAL_DATA, body)


class FileBytes:
    """A file's bytes, read with ``os.pread`` where the surgery looks: the headers of its fields and the
    pieces it keeps. The large fields it leaves in the file are never read: reading a 100 MB model whole costs
    0.1 s in page faults alone (fresh memory), the surgery on its headers a few ms. A file that shrinks under
    the reads is ``Malformed``."""

    WINDOW_BYTES = 1 << 20  # read at a time for the headers: a graph of many small nodes is walked in few reads
    HEADER_BYTES = 24  # a tag and a length or value: two varints of at most ten bytes each, or a tag and fixed64

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self._base, self._window = 0, b""

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, piece: slice) -> bytes:
        start, stop, _ = piece.indices(self.size)
        if stop <= start:
            return b""
        if self._base <= start and stop <= self._base + len(self._window):
            return self._window[start - self._base : stop - self._base]
        return self._read(start, stop - start)

    def fields(self, start: int, end: int) -> Iterator[Field]:
        """As ``iter_fields`` over the file's bytes ``start..end``."""
        pos = start
        while pos < end:
            if pos < self._base or pos + min(self.HEADER_BYTES, end - pos) > self._base + len(self._window):
                self._window, self._base = (
                    self._read(pos, min(max(self.WINDOW_BYTES, self.HEADER_BYTES), end - pos)),
                    pos,
                )
            field = field_at(self._window, pos - self._base, min(end - self._base, len(self._window)), self._base)
            if field.end > end:
                raise Malformed
            yield field
            pos = field.end

    def _read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise Malformed  # the file is shorter than its fields say, or shrank
        return data


def _fields(data: bytes | FileBytes, start: int, end: int) -> Iterator[Field]:
    return data.fields(start, end) if isinstance(data, FileBytes) else iter_fields(data, start, end)


def strip_large_raw_data(data: bytes | FileBytes, location: str, min_bytes: int) -> tuple[bytes, int] | None:
    """(skeleton bytes, tensors moved) with large initializer data pointing into the file, or None."""
    try:
        graphs = [f for f in _fields(data, 0, len(data)) if f.number == MODEL_GRAPH]
        if len(graphs) != 1 or graphs[0].wire_type != LENGTH:
            return None
        graph = graphs[0]
        pieces: list[bytes] = []
        cursor = graph.value_start
        moved = 0
        for field in _fields(data, graph.value_start, graph.end):
            if (
                field.number != GRAPH_INITIALIZER
                or field.wire_type != LENGTH
                or field.end - field.value_start < min_bytes
            ):
                continue  # a tensor smaller than min_bytes cannot hold that much raw data: not walked
            tensor = _strip_tensor(data, field, location, min_bytes)
            if tensor is None:
                continue
            pieces += [data[cursor : field.start], length_field(GRAPH_INITIALIZER, tensor)]
            cursor = field.end
            moved += 1
    except Malformed:
        return None
    if not moved:
        return None
    pieces.append(data[cursor : graph.end])
    skeleton = data[: graph.start] + length_field(MODEL_GRAPH, b"".join(pieces)) + data[graph.end :]
    return skeleton, moved


def _strip_tensor(data: bytes | FileBytes, tensor: Field, location: str, min_bytes: int) -> bytes | None:
    raw = None
    data_type = 0
    for field in _fields(data, tensor.value_start, tensor.end):
        if field.number in (TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION):
            return None  # already says where its data is: leave it to the loader's checks
        if field.number == TENSOR_DATA_TYPE and field.wire_type == VARINT:
            data_type = field.value
        if field.number == TENSOR_RAW_DATA:
            if raw is not None or field.wire_type != LENGTH:
                return None
            raw = field
    if raw is None or data_type not in MAPPABLE_TYPES or raw.end - raw.value_start < min_bytes:
        return None
    return b"".join(
        [
            data[tensor.value_start : raw.start],
            data[raw.end : tensor.end],
            _entry("location", location),
            _entry("offset", str(raw.value_start)),
            _entry("length", str(raw.end - raw.value_start)),
            encode_varint(TENSOR_DATA_LOCATION << 3 | VARINT),
            encode_varint(EXTERNAL),
        ]
    )
