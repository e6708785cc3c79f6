"""Loading: a path becomes a parsed ONNX model, or a ``ModelError`` naming the problem.

Weights stored as external data are never read here. Their locations pass the one
external-data gate (``relulint.external``: only files inside the model's folder are ever
opened) and are recorded, and ``relulint.tensors`` reads them on demand, in blocks where
they are large, so a model of many gigabytes costs little memory to lint. Model-local
functions are inlined within a node budget (``relulint.inlining``); a message nested
too deep for protobuf is measured on the wire (``relulint.wire``) before it is parsed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relulint.errors import ModelError, one_line
from relulint.external import check_external_data
from relulint.findings import Note
from relulint.inlining import inline_functions
from relulint.lazy import onnx
from relulint.loaded import Digest, LoadedModel
from relulint.skeleton import typed_skeleton
from relulint.wire import FileBytes, message_depth, strip_large_raw_data

DEFAULT_MAX_MODEL_SIZE = 2 * 1024**3  # protobuf cannot parse a larger message anyway


# Python's protobuf parser stops at 100 nested messages (about 33 nested subgraphs). A model nested deeper
# is parsed again with the limit lifted, but only this deep (the parser recurses on the C stack: a file
# nested tens of thousands deep would crash the process) and only this large (measuring costs a pass).
MAX_MESSAGE_DEPTH = 400
DEEP_PARSE_MAX_SIZE = 16 * 1024**2  # measuring walks every field in Python: about 0.5 s per MB of nodes


def load_model(
    path: str | os.PathLike[str], max_size: int = DEFAULT_MAX_MODEL_SIZE, check: bool = True, digest: bool = True
) -> LoadedModel:
    """Read and parse one model file; raise ``ModelError`` with a one-line problem.

    ``check=False`` leaves out the onnx checker (its complaints are only a note), for a caller
    that runs ``run_checker`` later, off its critical path. ``digest=False`` computes the file's SHA-256
    only if ``LoadedModel.sha256`` is read, instead of on a thread from the start.
    """
    shown = str(path)
    file = Path(path)
    model, depth, inline_location, sha256, size = _read_and_parse(shown, file, max_size, digest)
    if not model.HasField("graph") or not (model.graph.node or model.graph.output):
        sha256.settle()
        raise ModelError(shown, "not an ONNX model: it has no graph")
    loaded = LoadedModel(
        path=shown,
        model=model,
        digest=sha256,
        file_size=size,
        base_dir=file.parent,
        inline_location=inline_location,
    )
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
    inline_functions(loaded)
    check_external_data(loaded)
    _check_opsets(loaded)
    if check:
        loaded.notes.extend(run_checker(loaded))
    return loaded


def _read_and_parse(
    shown: str, file: Path, max_size: int, eager_digest: bool
) -> tuple[onnx.ModelProto, int, str | None, Digest, int]:
    """(model, message depth beyond the default limit or 0, inline location, digest, file size).

    The file is read (never memory-mapped: a mapped file truncated while it is read kills the process
    with SIGBUS, which no handler can turn into an error). A large one is first parsed as a skeleton read
    where the surgery looks (``relulint.wire``): its large weights stay in the file, unread until a rule
    needs them, and it is read whole only when that fails.
    """
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
            # The reference names the file inside its own folder: a symlinked model (whose target may live
            # elsewhere) is parsed whole, so the external-data checks never see a location leaving the folder.
            if size >= STRIP_INLINE_WEIGHTS_ABOVE and not file.is_symlink():
                skeleton = _parse_stripped(stream.fileno(), size, file.name)
                if skeleton is not None:
                    return skeleton, 0, file.name, Digest.of_file(stream.fileno(), size, eager_digest), size
            data = stream.read(max_size + 1)  # bounded: the file may grow while it is read
        if len(data) > max_size:
            raise ModelError(shown, _too_large(len(data), max_size))
    except FileNotFoundError:
        if file.is_symlink():
            raise ModelError(shown, "is a symbolic link to a file that does not exist") from None
        raise ModelError(shown, "no such file") from None
    except PermissionError:
        raise ModelError(shown, "permission denied") from None
    except OSError as exc:
        raise ModelError(shown, f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise ModelError(shown, f"cannot read: {one_line(exc)}") from None
    if not data:
        raise ModelError(shown, "file is empty, not an ONNX model")
    # A large file's bytes are hashed at once: a digest waiting to be read would keep them all in memory.
    digest = Digest.of_bytes(data, eager_digest or len(data) >= STRIP_INLINE_WEIGHTS_ABOVE)
    try:
        model, depth = _parse(shown, data)
    except BaseException:
        digest.settle()
        raise
    return model, depth, None, digest, len(data)


def repair_strings(message: Any) -> int:
    """Decode, in place, string fields holding invalid UTF-8; return how many fields were repaired.

    Python's protobuf hands such a field out as ``bytes`` instead of ``str`` (ONNX's .proto is proto2,
    which does not validate UTF-8), and every name would then break string formatting and JSON.
    """
    tensor_type = onnx.TensorProto  # looked up once: the lazy module's attribute access is Python code
    kinds: dict[Any, int] = {}  # field descriptor -> _field_kind, learnt as the fields are met
    repaired = 0
    stack = [message]
    while stack:
        current = stack.pop()
        if isinstance(current, tensor_type):
            # Only a tensor's texts: ListFields would copy its raw_data, the bulk of the file.
            for name in ("name", "doc_string"):
                if type(getattr(current, name)) is bytes:
                    setattr(current, name, _decoded(getattr(current, name)))
                    repaired += 1
            stack.extend(current.external_data)
            continue
        for descriptor, value in current.ListFields():
            kind = kinds.get(descriptor)
            if kind is None:
                kind = kinds[descriptor] = _field_kind(descriptor)
            if kind == _MESSAGES:
                stack.extend(value)
            elif kind == _MESSAGE:
                stack.append(value)
            elif kind == _STRINGS:
                if bytes in map(type, value):
                    value[:] = [_decoded(item) for item in value]
                    repaired += 1
            elif kind == _STRING and type(value) is bytes:
                setattr(current, descriptor.name, _decoded(value))
                repaired += 1
    return repaired


_OTHER, _MESSAGE, _MESSAGES, _STRING, _STRINGS = range(5)


def _field_kind(descriptor: Any) -> int:
    from google.protobuf.descriptor import FieldDescriptor  # protobuf, like onnx, only once a model is read

    if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        return _MESSAGES if descriptor.is_repeated else _MESSAGE
    if descriptor.type == FieldDescriptor.TYPE_STRING:
        return _STRINGS if descriptor.is_repeated else _STRING
    return _OTHER


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


def _parse_stripped(fd: int, size: int, name: str) -> onnx.ModelProto | None:
    """The model parsed with its large main-graph initializers left in the file as external data, or None
    when there are none or the surgery met something unusual (the file is then parsed as it is)."""
    stripped = strip_large_raw_data(FileBytes(fd, size), name, STRIP_TENSORS_FROM)
    if stripped is None:
        return None
    try:
        return onnx.load_model_from_string(stripped[0])
    except Exception:  # noqa: BLE001
        return None


def _parse(shown: str, data: bytes) -> tuple[onnx.ModelProto, int]:
    """The parsed model, and its message depth when that is beyond protobuf's default limit (else 0)."""
    try:
        return onnx.load_model_from_string(data), 0
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError or ValueError by build
        problem = one_line(exc)
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
        raise ModelError(shown, f"not an ONNX model: protobuf parsing failed ({one_line(exc)})") from None


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
# So does a larger one whose initializers are all small (a graph of 100,000 nodes in 32 MB: 0.3 s whole,
# 0.9 s as a skeleton), up to this size: the copy the checker makes is bounded by it.
CHECK_SMALL_TENSORS_BELOW = 128 * 1024**2


def _check_whole(loaded: LoadedModel) -> bool:
    """Whether the checker gets the model itself rather than its skeleton."""
    initializers = loaded.model.graph.initializer
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in initializers):
        return False
    if loaded.file_size < CHECK_WHOLE_MODEL_BELOW:
        return True
    return loaded.file_size < CHECK_SMALL_TENSORS_BELOW and all(t.ByteSize() < STRIP_TENSORS_FROM for t in initializers)


def run_checker(loaded: LoadedModel) -> list[Note]:
    """The onnx checker's complaints as a note: a model it rejects may still be worth linting."""
    model = loaded.model
    try:
        if _check_whole(loaded):
            onnx.checker.check_model(model)
        else:
            onnx.checker.check_model(typed_skeleton(model))
    except Exception as exc:
        return [Note("checker", f"onnx checker: {one_line(exc, 300)}")]
    return []
