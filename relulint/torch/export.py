"""A module to an ONNX file that keeps what the rules judge, and a map from its nodes back to modules.

Both exporters fold BatchNorm into the Conv before it in eval mode (the TorchScript exporter in its
constant-folding pass, the dynamo exporter in onnxscript's optimizer), which hides a ``beta`` that switches
units off from RL202 and the normalization itself from RL301. Exporting without those passes keeps every
``BatchNormalization`` node with the module's own running statistics, ``gamma`` and ``beta``, and keeps the
parameters' names (``layer3.1.conv2.weight``), which name the module a layer belongs to.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch

EXPORTERS = ("torchscript", "dynamo")
OPSET = 17  # BatchNormalization, LayerNormalization and every activation the unit view knows
BATCH_DIM = "batch"


@dataclass
class Exported:
    path: Path
    input_names: list[str]
    node_scopes: dict[str, list[str]] = field(default_factory=dict)  # ONNX node name -> module scopes, outer first
    call_sites: dict[str, tuple[str, int]] = field(default_factory=dict)  # ONNX node name -> (file, line) of its call


def input_names(module: torch.nn.Module, count: int) -> list[str]:
    """The forward's parameter names (what the dynamo exporter calls the inputs), else input_0, input_1, ..."""
    try:
        parameters = [
            p.name
            for p in inspect.signature(module.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        parameters = []
    if len(parameters) < count or len(set(parameters[:count])) < count:
        return [f"input_{index}" for index in range(count)]
    return parameters[:count]


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Export as the model infers (running statistics, no dropout), then restore each module's mode."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
    except NotImplementedError:
        pass  # torch.export.load(...).module(): its mode was fixed when it was exported
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


def export(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], path: Path, exporter: str) -> Exported:
    """Write ``module`` as ONNX to ``path`` (external data, if any, beside it), batch dimension dynamic."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    names = input_names(module, len(example_inputs))
    with eval_mode(module), torch.no_grad():
        if exporter == "torchscript":
            _export_torchscript(module, tuple(example_inputs), path, names)
        else:
            _export_dynamo(module, tuple(example_inputs), path)
    model = onnx.load(str(path), load_external_data=False)
    exported = Exported(path=path, input_names=[i.name for i in model.graph.input][: len(names)])
    for node in model.graph.node:
        metadata = {entry.key: entry.value for entry in node.metadata_props}
        if "pkg.torch.onnx.name_scopes" in metadata:  # dynamo: the module path of every node
            exported.node_scopes[node.name] = _scopes_from_metadata(metadata["pkg.torch.onnx.name_scopes"])
            site = user_call_site(metadata.get("pkg.torch.onnx.stack_trace", ""))
            if site is not None:
                exported.call_sites[node.name] = site
        else:  # TorchScript: "/layer3/layer3.1/conv2/Conv"
            exported.node_scopes[node.name] = [part for part in node.name.split("/")[:-1] if part]
    return exported


def _export_torchscript(module: torch.nn.Module, inputs: tuple[Any, ...], path: Path, names: list[str]) -> None:
    outputs = _output_count(module, inputs)
    output_names = [f"output_{index}" for index in range(outputs)]
    axes = {name: {0: BATCH_DIM} for name in [*names, *output_names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice and tracer warnings are not the user's findings
        torch.onnx.export(
            module,
            inputs,
            str(path),
            dynamo=False,
            do_constant_folding=False,  # keeps BatchNormalization (the folding pass fuses it into Conv)
            opset_version=OPSET,
            input_names=names,
            output_names=output_names,
            dynamic_axes=axes,
        )


def _output_count(module: torch.nn.Module, inputs: tuple[Any, ...]) -> int:
    result = module(*inputs)
    flat, _ = torch.utils._pytree.tree_flatten(result)
    return sum(1 for value in flat if isinstance(value, torch.Tensor))


def _export_dynamo(module: torch.nn.Module, inputs: tuple[Any, ...], path: Path) -> None:
    shapes = tuple({0: torch.export.Dim.AUTO} if isinstance(value, torch.Tensor) else None for value in inputs)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" lines on every export
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, inputs, dynamo=True, optimize=False, dynamic_shapes=shapes)
    finally:
        quiet.setLevel(level)
    if program is None:  # only the TorchScript exporter (dynamo=False) returns None
        raise RuntimeError("torch.onnx.export (dynamo) returned no program")
    program.save(str(path))


def _scopes_from_metadata(text: str) -> list[str]:
    """``"['', 'layer3', 'layer3.1', 'layer3.1.bn', '_native_batch_norm']"`` -> the module scopes."""
    parts = [part.strip().strip("'\"") for part in text.strip("[]").split(",")]
    return [part for part in parts[:-1] if part]  # the last one names the op


TORCH_ROOT = str(Path(torch.__file__).resolve().parent)


def user_call_site(stack_trace: str) -> tuple[str, int] | None:
    """The innermost frame of a dynamo stack trace that is not torch's own code: where the user called it."""
    site = None
    for line in stack_trace.splitlines():
        line = line.strip()
        if not line.startswith('File "'):
            continue
        file, _, rest = line[len('File "') :].partition('", line ')
        number = rest.split(",", 1)[0]
        if number.isdigit() and not str(Path(file).resolve()).startswith(TORCH_ROOT) and Path(file).is_file():
            site = (file, int(number))
    return site


def module_of(
    scopes: list[str], modules: dict[str, torch.nn.Module], weight: str | None = None, bias: Sequence[str] = ()
) -> str | None:
    """The qualified name of the module an ONNX node (or its weight) belongs to, or None.

    A parameter named ``layer3.1.conv2.weight`` names it directly. Otherwise the node's scopes do: the
    dynamo exporter gives qualified names (``layer3.1``), the TorchScript exporter a mix of qualified
    names and attribute names (``/layer3/layer3.1/conv2``), resolved here one step at a time.
    """
    for tensor in (weight, *bias):
        if tensor:
            owner = tensor.rpartition(".")[0]
            if owner in modules:
                return owner
    current = ""
    found = False
    for scope in scopes:
        if scope in modules and scope.startswith(current):
            current, found = scope, True
        elif (candidate := f"{current}.{scope}" if current else scope) in modules:
            current, found = candidate, True
    return current if found else None
