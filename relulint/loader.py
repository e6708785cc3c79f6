"""Loading: a path becomes a parsed ONNX model, or a ``ModelError`` naming the problem.

Weights stored as external data are never read here. Their locations are checked
(only files inside the model's folder are ever opened) and recorded, and
``relulint.tensors`` memory-maps them on demand, so a model of many gigabytes
costs little memory to lint.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from relulint.errors import ModelError
from relulint.findings import Note

DEFAULT_MAX_MODEL_SIZE = 2 * 1024**3  # protobuf cannot parse a larger message anyway
# Element types whose external bytes cannot be memory-mapped one element per byte group.
PACKED_TYPES = {TensorProto.INT4, TensorProto.UINT4, getattr(TensorProto, "FLOAT4E2M1", -1)}


@dataclass
class LoadedModel:
    path: str  # as the user gave it; used in every message
    model: onnx.ModelProto
    sha256: str
    file_size: int
    base_dir: Path = Path(".")  # external data is read only from below this folder
    unavailable: dict[tuple[str, str, str], str] = field(default_factory=dict)  # external_key -> why missing
    notes: list[Note] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        model = self.model
        opsets = {(entry.domain or "ai.onnx"): entry.version for entry in model.opset_import}
        return {
            "opset": opsets.get("ai.onnx"),
            "opsets": opsets,
            "ir_version": model.ir_version,
            "producer": {"name": model.producer_name, "version": model.producer_version},
            "file_size": self.file_size,
        }


def load_model(path: str | os.PathLike[str], max_size: int = DEFAULT_MAX_MODEL_SIZE) -> LoadedModel:
    """Read and parse one model file; raise ``ModelError`` with a one-line problem."""
    shown = str(path)
    file = Path(path)
    data = _read_bytes(shown, file, max_size)
    if not data:
        raise ModelError(shown, "file is empty, not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError or ValueError by build
        raise ModelError(shown, f"not an ONNX model: protobuf parsing failed ({_one_line(exc)})") from None
    if not model.HasField("graph") or not (model.graph.node or model.graph.output):
        raise ModelError(shown, "not an ONNX model: it has no graph")
    loaded = LoadedModel(
        path=shown,
        model=model,
        sha256=hashlib.sha256(data).hexdigest(),
        file_size=len(data),
        base_dir=file.parent,
    )
    del data
    _check_external_data(loaded)
    _inline_functions(loaded)
    _check_opsets(loaded)
    _run_checker(loaded)
    return loaded


def _read_bytes(shown: str, file: Path, max_size: int) -> bytes:
    try:
        if file.is_dir():
            raise ModelError(shown, "is a folder with no .onnx files")
        size = file.stat().st_size
        if size > max_size:
            raise ModelError(
                shown, f"file is {size:,} bytes, over the {max_size:,}-byte limit (--max-model-size)"
            )
        return file.read_bytes()
    except FileNotFoundError:
        raise ModelError(shown, "no such file") from None
    except PermissionError:
        raise ModelError(shown, "permission denied") from None
    except OSError as exc:
        raise ModelError(shown, f"cannot read: {exc.strerror or exc}") from None


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
    """Every tensor that can hold data: initializers and tensor-valued attributes."""
    for graph in iter_graphs(model.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors


def expected_nbytes(tensor: TensorProto) -> int | None:
    if tensor.data_type in PACKED_TYPES or tensor.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    count = 1
    for dim in tensor.dims:
        count *= dim
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        return None
    return count * itemsize


def external_key(tensor: TensorProto) -> tuple[str, str, str]:
    entries = {entry.key: entry.value for entry in tensor.external_data}
    return (tensor.name, entries.get("location", ""), entries.get("offset", "0"))


def _check_external_data(loaded: LoadedModel) -> None:
    """Refuse any external location outside the model's folder; note the missing ones."""
    base_dir = loaded.base_dir
    real_base = base_dir.resolve()
    for tensor in iter_tensors(loaded.model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        name = tensor.name or "<unnamed>"
        location = entries.get("location", "")
        if not location:
            loaded.unavailable[external_key(tensor)] = f"tensor '{name}' is marked external but names no file"
            continue
        if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location[:3]:
            raise ModelError(
                loaded.path,
                f"external data of tensor '{name}' has the absolute location '{location}'; "
                "relulint only reads external data from files inside the model's folder",
            )
        parts = Path(os.path.normpath(location.replace("\\", "/"))).parts
        if ".." in parts:
            raise ModelError(
                loaded.path,
                f"external data of tensor '{name}' at '{location}' climbs out of the model's folder",
            )
        target = base_dir / location
        real_target = target.resolve()
        if not real_target.is_relative_to(real_base):
            raise ModelError(
                loaded.path,
                f"external data of tensor '{name}' at '{location}' leaves the model's folder "
                "through a symbolic link",
            )
        problem = _external_problem(tensor, real_target, entries)
        if problem:
            loaded.unavailable[external_key(tensor)] = f"external data of tensor '{name}' ({location}) {problem}"
    for reason in loaded.unavailable.values():
        loaded.notes.append(Note("skipped", f"{reason}; statistics of that tensor are skipped"))


def _external_problem(tensor: TensorProto, file: Path, entries: dict[str, str]) -> str | None:
    if not file.is_file():
        return "is missing"
    try:
        offset = int(entries.get("offset", 0) or 0)
        length = int(entries["length"]) if entries.get("length") else None
    except ValueError:
        return "has an offset or length that is not a number"
    expected = expected_nbytes(tensor)
    if expected is None:
        return "has an element type relulint cannot memory-map"
    if length is not None and length != expected:
        return f"declares {length} bytes but its shape needs {expected}"
    if offset < 0 or offset + expected > file.stat().st_size:
        return f"needs bytes {offset}..{offset + expected} but the file has {file.stat().st_size}"
    return None


def _inline_functions(loaded: LoadedModel) -> None:
    """Replace calls of model-local functions by their bodies so their nodes are analysed too."""
    if not loaded.model.functions:
        return
    try:
        from onnx import inliner

        loaded.model = inliner.inline_local_functions(loaded.model)
    except Exception as exc:
        loaded.notes.append(
            Note("skipped", f"model-local functions could not be inlined ({_one_line(exc)}); their bodies are not analysed")
        )


def _check_opsets(loaded: LoadedModel) -> None:
    known = onnx.defs.onnx_opset_version()
    for entry in loaded.model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > known:
            loaded.notes.append(
                Note("info", f"opset {entry.version} is newer than the {known} this onnx knows; ops are read as in opset {known}")
            )


# Below this size (and without external data) the checker gets the model itself: serializing it
# costs less than building a skeleton of a graph with many thousand small initializers.
CHECK_WHOLE_MODEL_BELOW = 16 * 1024**2


def _run_checker(loaded: LoadedModel) -> None:
    """The onnx checker's complaints are a note: a model it rejects may still be worth linting."""
    model = loaded.model
    external = any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
    try:
        if loaded.file_size < CHECK_WHOLE_MODEL_BELOW and not external:
            onnx.checker.check_model(model)
        else:
            onnx.checker.check_model(_checker_skeleton(model))
    except Exception as exc:
        loaded.notes.append(Note("checker", f"onnx checker: {_one_line(exc, 300)}"))


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
