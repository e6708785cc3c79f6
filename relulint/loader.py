"""Loading: a path becomes a parsed ONNX model, or a ``ModelError`` naming the problem.

Weights stored as external data are never read here. Their locations are checked
(only files inside the model's folder are ever opened) and recorded, and
``relulint.tensors`` reads them on demand, in blocks where they are large, so a
model of many gigabytes costs little memory to lint.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relulint.errors import ModelError
from relulint.findings import Note
from relulint.lazy import onnx
from relulint.wire import strip_large_raw_data

if TYPE_CHECKING:
    from onnx import TensorProto

DEFAULT_MAX_MODEL_SIZE = 2 * 1024**3  # protobuf cannot parse a larger message anyway


@functools.cache
def packed_bits() -> dict[int, int]:
    """Element types stored several to a byte (type -> bits per element): their bytes cannot be
    memory-mapped one element per byte group. Those this onnx knows (a function: onnx loads lazily)."""
    names = (
        ("INT4", 4),
        ("UINT4", 4),
        ("FLOAT4E2M1", 4),
        ("INT2", 2),
        ("UINT2", 2),
        ("FLOAT6E2M3", 6),
        ("FLOAT6E3M2", 6),
    )
    return {getattr(onnx.TensorProto, name): bits for name, bits in names if hasattr(onnx.TensorProto, name)}


# Python's protobuf parser stops at 100 nested messages (about 33 nested subgraphs). A model nested deeper
# is parsed again with the limit lifted, but only this deep (the parser recurses on the C stack: a file
# nested tens of thousands deep would crash the process) and only this large (measuring costs a pass).
MAX_MESSAGE_DEPTH = 400
DEEP_PARSE_MAX_SIZE = 16 * 1024**2  # measuring walks every field in Python: about 0.5 s per MB of nodes


class _Digest:
    """The SHA-256 of the file's bytes, computed on another thread and waited for only when read.

    hashlib releases the GIL on large buffers, so the hash runs on the other core while the model
    is parsed, the graph built and the probe started (0.06 s of a 100 MB file off the critical path).
    """

    def __init__(self, data: bytes) -> None:
        self._digest = hashlib.sha256()
        self._thread = threading.Thread(target=self._digest.update, args=(data,), daemon=True)
        self._thread.start()
        self._value: str | None = None

    def value(self) -> str:
        if self._value is None:
            self._thread.join()
            self._value = self._digest.hexdigest()
        return self._value


@dataclass
class LoadedModel:
    path: str  # as the user gave it; used in every message
    model: onnx.ModelProto
    digest: _Digest | str  # the file's SHA-256, or its pending computation
    file_size: int
    base_dir: Path = Path(".")  # external data is read only from below this folder
    # Set when large inline weights were left in the file and point into it (relulint.wire): its name.
    inline_location: str | None = None
    unavailable: dict[tuple[str, str, str], str] = field(default_factory=dict)  # external_key -> why missing
    # location -> the file it names, for every location the external-data gate let through
    external_files: dict[str, CheckedFile] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        if not isinstance(self.digest, str):
            self.digest = self.digest.value()
        return self.digest

    def info(self) -> dict[str, Any]:
        model = self.model
        opsets = {(entry.domain or "ai.onnx"): entry.version for entry in model.opset_import}
        return {
            "opset": opsets.get("ai.onnx"),
            "opsets": opsets,
            "ir_version": model.ir_version,
            "producer": {"name": model.producer_name, "version": model.producer_version},
            "doc_string": _clip(model.doc_string, 2000),
            # Author-supplied key/value pairs; capped so a hostile model cannot flood the reports.
            "metadata": {_clip(p.key, 200): _clip(p.value, 2000) for p in list(model.metadata_props)[:50]},
            "file_size": self.file_size,
        }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_model(path: str | os.PathLike[str], max_size: int = DEFAULT_MAX_MODEL_SIZE, check: bool = True) -> LoadedModel:
    """Read and parse one model file; raise ``ModelError`` with a one-line problem.

    ``check=False`` leaves out the onnx checker (its complaints are only a note), for a caller
    that runs ``run_checker`` later, off its critical path.
    """
    shown = str(path)
    file = Path(path)
    data = _read_bytes(shown, file, max_size)
    if not len(data):
        raise ModelError(shown, "file is empty, not an ONNX model")
    digest = _Digest(data)
    try:
        model, depth, inline_location = _parse_large_or_whole(shown, file, data)
    except BaseException:
        digest.value()  # no thread outlives a failed load
        raise
    if not model.HasField("graph") or not (model.graph.node or model.graph.output):
        raise ModelError(shown, "not an ONNX model: it has no graph")
    loaded = LoadedModel(
        path=shown,
        model=model,
        digest=digest,
        file_size=len(data),
        base_dir=file.parent,
        inline_location=inline_location,
    )
    del data
    if depth:
        loaded.notes.append(
            Note(
                "info",
                f"its messages are nested {depth} deep (subgraphs in subgraphs), deeper than the 100 that "
                "onnxruntime and the onnx checker accept; it is analysed statically only",
            )
        )
    repaired = repair_strings(loaded.model)
    if repaired:
        loaded.notes.append(
            Note("checker", f"{repaired} names or texts are not valid UTF-8; they are shown with U+FFFD in their place")
        )
    # Inline first, so that external tensors inside function bodies are checked like all others.
    _inline_functions(loaded)
    _check_external_data(loaded)
    _check_opsets(loaded)
    if check:
        loaded.notes.extend(run_checker(loaded))
    return loaded


def _read_bytes(shown: str, file: Path, max_size: int) -> bytes:
    """The file's bytes, read (never memory-mapped: a mapped file truncated while it is read kills the
    process with SIGBUS, which no handler can turn into an error)."""
    try:
        if file.is_dir():
            raise ModelError(shown, "is a folder with no .onnx files")
        mode = file.stat().st_mode
        # A FIFO would block forever and a device such as /dev/zero never ends: only regular files are read.
        if not stat.S_ISREG(mode):
            raise ModelError(shown, f"is not a regular file (a {_file_kind(mode)}), not an ONNX model")
        with open(file, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > max_size:
                raise ModelError(shown, _too_large(size, max_size))
            data = stream.read(max_size + 1)  # bounded: the file may grow while it is read
        if len(data) > max_size:
            raise ModelError(shown, _too_large(len(data), max_size))
        return data
    except FileNotFoundError:
        if file.is_symlink():
            raise ModelError(shown, "is a symbolic link to a file that does not exist") from None
        raise ModelError(shown, "no such file") from None
    except PermissionError:
        raise ModelError(shown, "permission denied") from None
    except OSError as exc:
        raise ModelError(shown, f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise ModelError(shown, f"cannot read: {_one_line(exc)}") from None


def repair_strings(message: Any) -> int:
    """Decode, in place, string fields holding invalid UTF-8; return how many fields were repaired.

    Python's protobuf hands such a field out as ``bytes`` instead of ``str`` (ONNX's .proto is proto2,
    which does not validate UTF-8), and every name would then break string formatting and JSON.
    """
    from google.protobuf.descriptor import FieldDescriptor  # protobuf, like onnx, only once a model is read

    repaired = 0
    stack = [message]
    while stack:
        current = stack.pop()
        if isinstance(current, onnx.TensorProto):
            # Only a tensor's texts: ListFields would copy its raw_data, the bulk of the file.
            for name in ("name", "doc_string"):
                if type(getattr(current, name)) is bytes:
                    setattr(current, name, _decoded(getattr(current, name)))
                    repaired += 1
            stack.extend(current.external_data)
            continue
        for descriptor, value in current.ListFields():
            if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
                if descriptor.is_repeated:
                    stack.extend(value)
                else:
                    stack.append(value)
            elif descriptor.type != FieldDescriptor.TYPE_STRING:
                continue
            elif descriptor.is_repeated:
                if any(type(item) is bytes for item in value):
                    value[:] = [_decoded(item) for item in value]
                    repaired += 1
            elif type(value) is bytes:
                setattr(current, descriptor.name, _decoded(value))
                repaired += 1
    return repaired


def _decoded(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _too_large(size: int, max_size: int) -> str:
    return f"file is {size:,} bytes, over the {max_size:,}-byte limit (--max-model-size)"


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return kind
    return "special file"


# A file this large has its large inline weights left in the file (read from it where needed) instead of
# copied into the parsed message (relulint.wire); smaller ones are parsed whole, which is as fast.
STRIP_INLINE_WEIGHTS_ABOVE = 16 * 1024**2
STRIP_TENSORS_FROM = 64 * 1024  # bytes of raw data


def _parse_large_or_whole(shown: str, file: Path, data: bytes) -> tuple[onnx.ModelProto, int, str | None]:
    """Parse the file, leaving a large model's big initializers in the file as external data."""
    # The reference names the file inside its own folder: a symlinked model (whose target may live
    # elsewhere) is parsed whole, so the external-data checks never see a location leaving the folder.
    if len(data) >= STRIP_INLINE_WEIGHTS_ABOVE and not file.is_symlink():
        stripped = strip_large_raw_data(data, file.name, STRIP_TENSORS_FROM)
        if stripped is not None:
            try:
                return onnx.load_model_from_string(stripped[0]), 0, file.name
            except Exception:
                pass  # the surgery met something unusual: parse the file as it is
    model, depth = _parse(shown, data)
    return model, depth, None


def _parse(shown: str, data: bytes) -> tuple[onnx.ModelProto, int]:
    """The parsed model, and its message depth when that is beyond protobuf's default limit (else 0)."""
    try:
        return onnx.load_model_from_string(data), 0
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError or ValueError by build
        problem = _one_line(exc)
    if "MaxDepth" not in problem and "recursion" not in problem.lower():
        raise ModelError(shown, f"not an ONNX model: protobuf parsing failed ({problem})")
    if len(data) > DEEP_PARSE_MAX_SIZE:
        raise ModelError(
            shown,
            f"its messages are nested more than 100 deep (subgraphs in subgraphs) and the file is over "
            f"{DEEP_PARSE_MAX_SIZE // 1024**2} MB; relulint does not parse such a model",
        )
    depth = message_depth(data, onnx.ModelProto.DESCRIPTOR, MAX_MESSAGE_DEPTH)
    if depth is None:
        raise ModelError(
            shown,
            f"its messages are nested more than {MAX_MESSAGE_DEPTH} deep (subgraphs in subgraphs); "
            "relulint refuses to parse it (the parser would exhaust the stack)",
        )
    try:
        return _parse_deep(data), depth
    except Exception as exc:
        raise ModelError(shown, f"not an ONNX model: protobuf parsing failed ({_one_line(exc)})") from None


def _parse_deep(data: bytes) -> onnx.ModelProto:
    """Parse with protobuf's depth limit lifted, for a message already measured to be shallow enough."""
    try:
        from google._upb import _message as upb_message
    except ImportError:  # the pure-Python or C++ protobuf: nothing to lift
        return onnx.load_model_from_string(data)
    upb_message.SetAllowOversizeProtos(True)
    try:
        return onnx.load_model_from_string(data)
    finally:
        upb_message.SetAllowOversizeProtos(False)


def message_depth(data: bytes, descriptor: Any, limit: int) -> int | None:
    """How deep the protobuf messages in ``data`` nest (1 = no submessage), or None beyond ``limit``.

    Walks the wire format with an explicit stack, descending only into fields the schema declares as
    messages; scalars, strings and unknown fields are skipped by their length. Malformed bytes end the
    walk where they start (the real parser reports them).
    """
    view = memoryview(data)
    deepest = 1
    # (end offset, descriptor) of each message being walked; the position is shared
    stack: list[tuple[int, Any]] = [(len(data), descriptor)]
    position = 0
    while stack:
        end, message = stack[-1]
        if position >= end:
            stack.pop()
            continue
        key, position = _varint(view, position, end)
        if key is None:
            return deepest
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _varint(view, position, end)
            if position is None:
                return deepest
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        elif wire_type == 2:
            length, position = _varint(view, position, end)
            if length is None or position + length > end:
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
    return deepest


def _varint(view: memoryview, position: int, end: int) -> tuple[int | None, int | None]:
    result = shift = 0
    while position < end and shift < 70:
        byte = view[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
    return None, None


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph nested in its nodes' attributes, depth first."""
    stack = [graph]
    while stack:
        current = stack.pop()
        yield current
        for node in current.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


def iter_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor that can hold data, wherever ONNX allows one: initializers, the values and indices of
    sparse initializers, tensor and sparse-tensor attributes (single and lists, so Constant's ``value`` and
    ``sparse_value`` too), in the main graph, every subgraph, the training_info graphs and the bodies of
    model-local functions (which stay when they could not be inlined). The external-data gate
    (``_check_external_data``) walks this, so a carrier missing here would be a way around it."""
    stack: list[onnx.GraphProto | onnx.FunctionProto] = [model.graph, *model.functions]
    for training in model.training_info:
        stack.extend((training.initialization, training.algorithm))
    while stack:
        current = stack.pop()
        if isinstance(current, onnx.GraphProto):
            yield from current.initializer
            for sparse in current.sparse_initializer:
                yield sparse.values
                yield sparse.indices
        for node in current.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors
                elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices
                elif attr.type == onnx.AttributeProto.SPARSE_TENSORS:
                    for sparse in attr.sparse_tensors:
                        yield sparse.values
                        yield sparse.indices
                elif attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


def element_count(tensor: TensorProto) -> int | None:
    """Elements the tensor's dims declare; None when a dim is negative (a malformed tensor)."""
    count = 1
    for dim in tensor.dims:
        if dim < 0:
            return None
        count *= dim
    return count


def expected_nbytes(tensor: TensorProto) -> int | None:
    if tensor.data_type in packed_bits() or tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    count = element_count(tensor)
    if count is None:
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        return None
    return count * itemsize


def external_key(tensor: TensorProto) -> tuple[str, str, str]:
    entries = {entry.key: entry.value for entry in tensor.external_data}
    return (tensor.name, entries.get("location", ""), entries.get("offset", "0"))


def duplicate_external_key(tensor: TensorProto) -> str | None:
    """A key that the tensor's ``external_data`` list holds more than once, or None.

    Readers disagree on which of two ``location`` entries counts (a dict keeps the last, others the
    first), so a list with a checked location and a hostile one would pass one reader's check and
    send another reader elsewhere: such a list is refused outright.
    """
    seen: set[str] = set()
    for entry in tensor.external_data:
        if entry.key in seen:
            return entry.key
        seen.add(entry.key)
    return None


@dataclass(frozen=True)
class CheckedFile:
    """An external-data file that passed the gate: inside the model's folder, a regular file, this one."""

    path: Path  # resolved
    device: int
    inode: int
    size: int


MAX_EXTERNAL_NOTES = 20  # a hostile model may mark thousands of tensors external


def _check_external_data(loaded: LoadedModel) -> None:
    """The one gate for external data: every tensor ``iter_tensors`` yields passes here.

    A location outside the model's folder or an ``external_data`` list with a repeated key refuses the
    model; a missing or short file is noted and that tensor is skipped. Files that pass are recorded in
    ``loaded.external_files``, the only ones the probe links into its folder.
    """
    real_base = loaded.base_dir.resolve()
    resolved: dict[str, tuple[str | None, Path | None]] = {}  # location -> (refusal, file): resolved once
    for tensor in iter_tensors(loaded.model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        name = tensor.name or "<unnamed>"
        repeated = duplicate_external_key(tensor)
        if repeated is not None:
            raise ModelError(loaded.path, f"external data of tensor '{name}' names the key '{repeated}' twice")
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        if not location:
            loaded.unavailable[external_key(tensor)] = f"tensor '{name}' is marked external but names no file"
            continue
        if location not in resolved:
            refusal = location_problem(real_base, location)
            resolved[location] = (refusal, None if refusal else (real_base / location).resolve())
        refusal, file = resolved[location]
        if refusal:
            raise ModelError(loaded.path, f"external data of tensor '{name}' {refusal}")
        problem = _external_problem(tensor, file, entries)
        if problem:
            loaded.unavailable[external_key(tensor)] = f"external data of tensor '{name}' ({location}) {problem}"
        elif location not in loaded.external_files:
            try:
                info = file.stat()
            except OSError:  # removed since the line above
                loaded.unavailable[external_key(tensor)] = f"external data of tensor '{name}' ({location}) is missing"
                continue
            loaded.external_files[location] = CheckedFile(file, info.st_dev, info.st_ino, info.st_size)
    reasons = list(loaded.unavailable.values())
    for reason in reasons[:MAX_EXTERNAL_NOTES]:
        loaded.notes.append(Note("skipped", f"{reason}; statistics of that tensor are skipped"))
    if len(reasons) > MAX_EXTERNAL_NOTES:
        loaded.notes.append(
            Note("skipped", f"{len(reasons) - MAX_EXTERNAL_NOTES} more external tensors are unavailable too")
        )


def location_problem(real_base: Path, location: str) -> str | None:
    """Why an external-data location may not be read, or None when it names a path inside ``real_base``.

    ``real_base`` is the model's folder, already resolved. Used by the loader (which refuses the model)
    and again by ``relulint.tensors`` before it maps a file, so no path escapes either check.
    """
    if "\0" in location:
        return f"has a location with a NUL character ('{location}')"
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location[:3]:
        return (
            f"has the absolute location '{location}'; "
            "relulint only reads external data from files inside the model's folder"
        )
    if ".." in Path(os.path.normpath(location.replace("\\", "/"))).parts:
        return f"at '{location}' climbs out of the model's folder"
    try:
        real_target = (real_base / location).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symbolic-link loop, an over-long name
        return f"at '{location}' cannot be resolved ({_one_line(exc)})"
    if not real_target.is_relative_to(real_base):
        return f"at '{location}' leaves the model's folder through a symbolic link"
    return None


def _external_problem(tensor: TensorProto, file: Path, entries: dict[str, str]) -> str | None:
    try:
        mode = file.stat().st_mode
    except OSError:
        return "is missing"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    try:
        offset = int(entries.get("offset", 0) or 0)
        length = int(entries["length"]) if entries.get("length") else None
    except ValueError:
        return "has an offset or length that is not a number"
    if element_count(tensor) is None:
        return f"has the negative dimensions {list(tensor.dims)}"
    expected = expected_nbytes(tensor)
    if expected is None:
        return "has an element type relulint cannot memory-map"
    if length is not None and length != expected:
        return f"declares {length} bytes but its shape needs {expected}"
    size = file.stat().st_size
    if offset < 0 or offset + expected > size:
        return f"needs bytes {offset}..{offset + expected} but the file has {size}"
    return None


# Nodes the main graph may have once model-local functions are inlined. A 3 KB file whose functions each
# call the previous one twice, 24 levels deep, would inline to 2**24 nodes (killed at 8 GB); the budget is
# well above the 100,000-node graphs relulint lints in seconds.
MAX_INLINED_NODES = 1_000_000


def inlined_node_count(model: onnx.ModelProto, limit: int) -> int | None:
    """Nodes of the model once its local functions are inlined, counted without inlining; None when the
    count passes ``limit`` or a function calls itself. Each function's size is computed once, callees
    first (an explicit stack: a chain of thousands of functions must not exhaust Python's)."""
    functions = {(f.domain, f.name): f for f in model.functions}
    calls = {key: _calls(function, functions) for key, function in functions.items()}
    sizes: dict[tuple[str, str], int] = {}
    ON_STACK = -1
    for root in functions:
        if root in sizes:
            continue
        sizes[root] = ON_STACK
        stack = [(root, iter(calls[root]))]
        while stack:
            key, pending = stack[-1]
            callee = next(pending, None)
            if callee is not None:
                if sizes.get(callee) == ON_STACK:
                    return None  # recursion: no finite inlining
                if callee not in sizes:
                    sizes[callee] = ON_STACK
                    stack.append((callee, iter(calls[callee])))
                continue
            stack.pop()
            size = _own_nodes(functions[key], functions, sizes, limit)
            if size is None:
                return None
            sizes[key] = size
    return _own_nodes(model.graph, functions, sizes, limit)


def _nodes_within(owner: onnx.GraphProto | onnx.FunctionProto) -> Iterator[onnx.NodeProto]:
    """The nodes of a graph or function body and of every subgraph in them."""
    stack = [owner]
    while stack:
        current = stack.pop()
        for node in current.node:
            yield node
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


def _calls(owner: onnx.FunctionProto, functions: dict[tuple[str, str], Any]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(key for n in _nodes_within(owner) if (key := (n.domain, n.op_type)) in functions))


def _own_nodes(owner: Any, functions: dict, sizes: dict[tuple[str, str], int], limit: int) -> int | None:
    total = 0
    for node in _nodes_within(owner):
        key = (node.domain, node.op_type)
        total += sizes[key] if key in functions else 1
        if total > limit:
            return None
    return total


def _inline_functions(loaded: LoadedModel) -> None:
    """Replace calls of model-local functions by their bodies so their nodes are analysed too."""
    if not loaded.model.functions:
        return
    if inlined_node_count(loaded.model, MAX_INLINED_NODES) is None:
        loaded.notes.append(
            Note(
                "skipped",
                f"model-local functions would expand to more than {MAX_INLINED_NODES:,} nodes once inlined (or "
                "call themselves); they are not inlined and their bodies are not analysed",
            )
        )
        return
    try:
        from onnx import inliner

        loaded.model = inliner.inline_local_functions(loaded.model)
    except Exception as exc:
        loaded.notes.append(
            Note(
                "skipped",
                f"model-local functions could not be inlined ({_one_line(exc)}); their bodies are not analysed",
            )
        )


def _check_opsets(loaded: LoadedModel) -> None:
    known = onnx.defs.onnx_opset_version()
    for entry in loaded.model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > known:
            loaded.notes.append(
                Note(
                    "info",
                    f"opset {entry.version} is newer than the {known} this onnx knows; ops are read as in opset {known}",
                )
            )


# Below this size (and without external data) the checker gets the model itself: serializing it
# costs less than building a skeleton of a graph with many thousand small initializers.
CHECK_WHOLE_MODEL_BELOW = 16 * 1024**2


def run_checker(loaded: LoadedModel) -> list[Note]:
    """The onnx checker's complaints as a note: a model it rejects may still be worth linting."""
    model = loaded.model
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    try:
        if loaded.file_size < CHECK_WHOLE_MODEL_BELOW and not external:
            onnx.checker.check_model(model)
        else:
            onnx.checker.check_model(_checker_skeleton(model))
    except Exception as exc:
        return [Note("checker", f"onnx checker: {_one_line(exc, 300)}")]
    return []


def _checker_skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its main-graph initializers turned into typed graph inputs.

    For a large model the checker would otherwise copy every weight (it serializes the model), and
    it looks for external data relative to the working folder; the loader and ``relulint.tensors``
    check the data itself.
    """
    skeleton = onnx.ModelProto()
    for name in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(skeleton, name, getattr(model, name))
    skeleton.opset_import.extend(model.opset_import)
    skeleton.metadata_props.extend(model.metadata_props)
    skeleton.functions.extend(model.functions)
    source, graph = model.graph, skeleton.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    graph.sparse_initializer.extend(source.sparse_initializer)
    graph.input.extend(source.input)
    declared = {i.name for i in source.input}
    for tensor in source.initializer:
        if tensor.name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return skeleton


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
