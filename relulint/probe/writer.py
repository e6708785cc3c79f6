"""Writing the instrumented model: its graph as a new file beside hard links to its weights, pruned of what
no probed layer needs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

from relulint.external import CheckedFile
from relulint.findings import Note
from relulint.graph import Graph
from relulint.loader import iter_graphs
from relulint.probe.instrument import Instrumentation
from relulint.units import LINEAR_OPS


class LinkRefused(Exception):
    """The instrumented model's weights cannot be made readable beside it without a large copy."""


# A weight file that cannot be hard-linked (the temporary folder is on another file system) is copied,
# with a note, only up to this size; a larger one skips the probe instead of silently writing gigabytes.
COPY_AT_MOST = 256 * 1024**2


def write_model(
    graph: Graph,
    instrumentation: Instrumentation,
    folder: Path,
    notes: list[Note] | None = None,
    keep: frozenset[str] = frozenset(),
) -> Path:
    """The instrumented model as a file in ``folder`` (onnxruntime loads a path faster than bytes).

    Only the graph is written: weights stay where they are. External data files, and the model
    file itself when the loader left its large weights in it (``loaded.inline_location``), are
    hard-linked beside the new file. onnxruntime then reads those weights as external data,
    which measured faster (session creation 0.25 s instead of 0.33 s on the ResNet-50 bench
    model) and lighter than parsing them inline from a copy of the file. A copy, when one is
    needed, is said in ``notes``; ``LinkRefused`` when it would be too large.
    """
    loaded = graph.loaded
    files = loaded.external_files  # only what the loader's gate checked; nothing else is ever linked
    target = folder / _free_name("instrumented.onnx", set(files))
    _link_external_data(files, folder, notes if notes is not None else [])
    main = loaded.model.graph
    prune = linear_after_last_layer(graph, instrumentation)
    with _applied(loaded.model, instrumentation):
        data = loaded.model.SerializeToString()
        taps = instrumentation.graphs.get(id(main))
        # ``keep``: model outputs the child reads too (a recurrent state carried to the next chunk)
        needed = {value.name for value in taps.outputs} | keep if taps is not None else set()
        kept = needed_nodes(main, needed) if prune and needed else None
    if kept is not None:
        data = _pruned(data, kept, needed)
    target.write_bytes(data)
    return target


def linear_after_last_layer(graph: Graph, instrumentation: Instrumentation) -> bool:
    """Whether a linear op follows the last probed activation of the main graph in node order (which is
    topological): only then can leaving out what the probe does not need save real work. A cheap test
    from the end of the graph, where the full walk costs a pass over every node (20,000 in a bench model)."""
    layers = [graph.nodes[tap.layer] for tap in instrumentation.taps]
    if any(layer.scope for layer in layers):
        return False  # a layer in a subgraph: the If that holds it and what it reads are needed, keep it all
    activations = {layer.outputs[0] for layer in layers}
    for node in reversed(graph.loaded.model.graph.node):
        if activations.intersection(node.output):
            return False
        if node.op_type in LINEAR_OPS:
            return True
    return False


def needed_nodes(graph: onnx.GraphProto, outputs: set[str]) -> list[int] | None:
    """Indices of the nodes the ``outputs`` depend on, in graph order; None when pruning the others saves no
    real work (none of them is a linear op).

    onnxruntime runs every node of a model, whatever outputs a run asks for. The probe needs only what its
    reductions read: an OPT-125M shape's lm head (a third of its multiply-adds) and everything else after the
    last ReLU is left out of the instrumented model, and onnxruntime then drops the weights only they use.
    """
    producers = {tensor: index for index, node in enumerate(graph.node) for tensor in node.output if tensor}
    needed, pending, kept = set(outputs), list(outputs), set()
    while pending:
        index = producers.get(pending.pop())
        if index is None or index in kept:
            continue
        kept.add(index)
        node = graph.node[index]
        for tensor in (*node.input, *_names_used_inside(node)):
            if tensor and tensor not in needed:
                needed.add(tensor)
                pending.append(tensor)
    left_out = [node for index, node in enumerate(graph.node) if index not in kept]
    if not any(node.op_type in LINEAR_OPS for node in left_out):
        return None
    return sorted(kept)


def _names_used_inside(node: onnx.NodeProto) -> set[str]:
    """Every tensor name the node's subgraphs read (outer-scope values among them), conservatively."""
    names: set[str] = set()
    for attribute in node.attribute:
        bodies = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for body in bodies:
            for graph in iter_graphs(body):
                for inner in graph.node:
                    names.update(inner.input)
    return names


def _pruned(data: bytes, kept: list[int], outputs: set[str]) -> bytes:
    """The serialized model with only the ``kept`` main-graph nodes and the probe's outputs. Done on a parsed
    copy: the loaded model's nodes are shared with the graph the static rules are reading."""
    model = onnx.ModelProto()
    model.ParseFromString(data)
    graph = model.graph
    nodes = [graph.node[index] for index in kept]
    values = [value for value in graph.output if value.name in outputs]
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    kept_outputs = [onnx.ValueInfoProto() for _ in values]
    for copy, value in zip(kept_outputs, values):
        copy.CopyFrom(value)
    del graph.output[:]
    graph.output.extend(kept_outputs)
    return model.SerializeToString()


def _free_name(name: str, taken: set[str]) -> str:
    """``name``, or a variant of it, that no external data location uses."""
    lowered = {_relative(location).parts[0].lower() for location in taken}
    candidate, count = name, 0
    while candidate.lower() in lowered:
        count += 1
        candidate = f"instrumented-{count}.onnx"
    return candidate


def _relative(location: str) -> Path:
    return Path(os.path.normpath(location.replace("\\", "/")))


class _applied:
    """Append the additions to the loaded model for the length of a ``with``, then take them out."""

    def __init__(self, model: onnx.ModelProto, instrumentation: Instrumentation) -> None:
        self.model = model
        self.instrumentation = instrumentation
        self.lengths: list[tuple[object, int]] = []

    def __enter__(self) -> None:
        for additions in self.instrumentation.graphs.values():
            graph = additions.graph
            for field_list, new in (
                (graph.node, additions.nodes),
                (graph.output, additions.outputs),
                (graph.initializer, additions.initializers),
            ):
                self.lengths.append((field_list, len(field_list)))
                field_list.extend(new)
        for node, outputs in self.instrumentation.node_outputs:
            self.lengths.append((node.output, len(node.output)))
            node.output.extend(outputs)

    def __exit__(self, *exc: object) -> None:
        for field_list, length in reversed(self.lengths):
            del field_list[length:]  # type: ignore[attr-defined]


def _link_external_data(files: dict[str, CheckedFile], folder: Path, notes: list[Note]) -> None:
    """Make the checked external weight files readable beside the temporary model, where onnxruntime looks.

    onnxruntime resolves symbolic links and refuses data outside the model's folder, so the files
    are hard-linked (free on the same file system), or else copied when small enough. Each target must
    lie inside ``folder``, and each source must still be the file the loader checked (same device and
    inode): a file swapped for a link to elsewhere since loading is refused, not followed.
    """
    real_folder = folder.resolve()
    for location, checked in sorted(files.items()):
        target = real_folder / _relative(location)
        if not target.resolve().is_relative_to(real_folder) or target.resolve() == real_folder:
            raise LinkRefused(f"its external data location '{location}' would leave the probe's folder")
        if target.exists():
            continue  # the same file under two spellings of its location
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(checked.path, target, follow_symlinks=False)
        except OSError:
            _copy_checked(location, checked, target, notes)
            continue
        linked = target.stat()
        if (linked.st_dev, linked.st_ino) != (checked.device, checked.inode):
            target.unlink()
            raise LinkRefused(f"its external data file '{location}' changed since it was checked")


def _copy_checked(location: str, checked: CheckedFile, target: Path, notes: list[Note]) -> None:
    if checked.size > COPY_AT_MOST:
        raise LinkRefused(
            f"its external data file '{location}' ({checked.size / 1024**2:,.0f} MB) cannot be hard-linked into "
            f"the probe's temporary folder (another file system) and is too large to copy; set TMPDIR to a "
            "folder on the model's file system"
        )
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(checked.path, flags), "rb") as source:
        opened = os.fstat(source.fileno())
        if (opened.st_dev, opened.st_ino) != (checked.device, checked.inode):
            raise LinkRefused(f"its external data file '{location}' changed since it was checked")
        with open(target, "xb") as copy:
            shutil.copyfileobj(source, copy, 1024**2)
    notes.append(
        Note(
            "info",
            f"probe: external data '{location}' ({checked.size / 1024**2:,.1f} MB) was copied into the probe's "
            "temporary folder, which is on another file system than the model",
        )
    )
