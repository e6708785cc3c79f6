"""``check(module, example_inputs)``: the ``relulint`` command's analyses on a live PyTorch module.

The module is exported to ONNX in a temporary folder (``relulint.torch.export``, which keeps BatchNorm
visible to the rules), the real samples given as ``data`` are written beside it as a ``.npz``, and
``relulint.engine.analyse`` runs on that folder exactly as the command line would. The findings are then
named the way the module's author knows them: the module path (``layer3.1.conv2``) in ``node``, and the
ONNX node, the module and its source line in ``evidence``.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relulint.config import Config, config_from_table, load_config_file
from relulint.engine import analyse
from relulint.findings import Finding, ModelResult, Note
from relulint.report import Run
from relulint.torch.export import Exported, export, module_of
from relulint.torch.result import Report
from relulint.torch.source import definition_site, shown_file

# Options that make no sense here: the data is the ``data`` argument, one module is one model.
NOT_OPTIONS = {"data", "jobs", "compare", "exit-zero"}
# With ``data`` and no ``samples`` option, up to this many samples are used (a unit never positive on N
# samples is bounded below about 3/N: 32, the command line's default, cannot tell dead from 10% active).
DATA_SAMPLES = 1024


def check(
    module: torch.nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    data: Any = None,
    exporter: str = "torchscript",
    name: str | None = None,
    config: str | Path | None = None,
    **options: Any,
) -> Report:
    """Lint ``module`` for dying ReLUs with the same rules and probe as the ``relulint`` command.

    ``example_inputs``: one tensor or a tuple, as ``module(*example_inputs)`` takes them (their batch
    dimension is exported as dynamic). ``data``: real samples for the probe: a tensor (or a tuple of one
    tensor per input), a ``DataLoader`` or any iterable of batches (a tensor, a tuple/list whose first
    items are the inputs, e.g. ``(x, y)``, or a dict by input name). ``exporter``: ``"torchscript"``
    (fast) or ``"dynamo"`` (records each node's call site; needs ``onnxscript``). ``config``: a
    ``relulint.toml``/``pyproject.toml`` to start from (none by default). ``options``: the command line's
    long options with ``_`` for ``-``: ``select=["RL5"]``, ``samples=256``, ``batch=16``, ``seed=1``,
    ``input_range={"x": "0,1"}``, ``rules={"RL501": {"fraction": 0.3}}``, ...
    """
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    settings = _config(config, options)
    shown = name or type(module).__name__
    with tempfile.TemporaryDirectory(prefix="relulint-torch-") as folder:
        exported = export(module, inputs, Path(folder) / "model.onnx", exporter)
        if data is not None:
            # samples="auto": the probe stops once the dead set is stable, within DATA_SAMPLES of the data
            asked = settings.samples if "samples" in options else None
            limit = asked if isinstance(asked, int) else DATA_SAMPLES
            arrays = collect_samples(data, exported.input_names, [_dtype(x) for x in inputs], limit)
            # The stub's allow_pickle keyword (numpy 2.1+) could be one of the names: mypy cannot tell it is not.
            np.savez(Path(folder) / "data.npz", **arrays)  # type: ignore[arg-type]
            taken = len(next(iter(arrays.values())))
            samples: int | str = "auto" if asked == "auto" else taken
            settings = replace(settings, data=str(Path(folder) / "data.npz"), samples=samples)
        started = _now()
        result = analyse(str(exported.path), settings)
        finished = _now()
    if result.error is not None:
        raise RuntimeError(f"relulint could not analyse the export of {shown}: {result.error}")
    named = name_by_module(result, module, exported, shown, folder)
    run = Run(results=[named], config=settings, started=started, finished=finished, command_line=[])
    return Report(run=run, fallback_source=definition_site(module, ""))


def _config(path: str | Path | None, options: dict[str, Any]) -> Config:
    table = {key.replace("_", "-"): value for key, value in options.items()}
    refused = sorted(NOT_OPTIONS & table.keys())
    if refused:
        raise TypeError(f"check() does not take {', '.join(refused)} as an option (see its docstring)")
    base = load_config_file(Path(path)) if path is not None else Config()
    return config_from_table(table, base)  # ValueError naming the key on a bad option


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _dtype(example: Any) -> np.dtype | None:
    return torch.empty(0, dtype=example.dtype).numpy().dtype if isinstance(example, torch.Tensor) else None


def collect_samples(data: Any, names: list[str], dtypes: list[np.dtype | None], limit: int) -> dict[str, np.ndarray]:
    """The first ``limit`` samples of ``data`` as one array per input name (samples on axis 0)."""
    if isinstance(data, torch.Tensor) or (isinstance(data, tuple) and all(isinstance(t, torch.Tensor) for t in data)):
        batches: Iterable[Any] = [data]
    elif isinstance(data, Mapping):
        batches = [data]
    else:
        batches = data
    parts: list[list[np.ndarray]] = [[] for _ in names]
    count = 0
    for batch in batches:
        tensors = _batch_inputs(batch, names)
        take = min(int(tensors[0].shape[0]), limit - count)
        for index, tensor in enumerate(tensors):
            array = tensor[:take].detach().cpu().numpy()
            wanted = dtypes[index] if index < len(dtypes) else None
            if wanted is not None and array.dtype != wanted and array.dtype.kind == wanted.kind:
                array = array.astype(wanted)  # float64 data for a float32 model, say
            parts[index].append(array)
        count += take
        if count >= limit:
            break
    if count == 0:
        raise ValueError("data holds no samples")
    return {name: np.concatenate(arrays) for name, arrays in zip(names, parts)}


def _batch_inputs(batch: Any, names: list[str]) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        tensors = [batch]
    elif isinstance(batch, Mapping):
        missing = [name for name in names if name not in batch]
        if missing:
            raise ValueError(f"a data batch has no entry for input {missing[0]!r} (inputs: {', '.join(names)})")
        tensors = [batch[name] for name in names]
    elif isinstance(batch, (tuple, list)):
        tensors = list(batch[: len(names)])
    else:
        raise ValueError(f"a data batch must be a tensor, a tuple/list or a dict, got {type(batch).__name__}")
    if len(tensors) < len(names) or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ValueError(f"a data batch must hold one tensor per input ({', '.join(names)}) first")
    if any(t.dim() == 0 or t.shape[0] != tensors[0].shape[0] for t in tensors):
        raise ValueError("the tensors of a data batch must have the same number of samples on axis 0")
    return tensors


# ---- naming the findings by module ------------------------------------------------------------
def name_by_module(
    result: ModelResult, root: torch.nn.Module, exported: Exported, shown: str, folder: str
) -> ModelResult:
    """The result with findings named by module path and source line instead of ONNX node ids."""
    modules = dict(root.named_modules())
    owners: dict[str, str] = {}  # ONNX node id -> module path
    for node, scopes in exported.node_scopes.items():
        owner = module_of(scopes, modules)
        if owner is not None:
            owners[node] = owner
    for record in result.layers:  # a layer is named by the module that makes its units (conv2, not relu)
        owner = module_of(
            exported.node_scopes.get(record.get("linear") or "", []),
            modules,
            record.get("weight"),
            record.get("bias") or (),
        ) or owners.get(record["name"])
        if owner is not None:
            owners[record["name"]] = owner
            record["module"] = owner
            site = _site(root, owner, exported, record.get("linear") or record["name"])
            if site is not None:
                record["source"] = site

    rename = _renamer(owners)

    def renamed(finding: Finding) -> Finding:
        owner = owners.get(finding.node or "")
        evidence = _renamed_values(finding.evidence, owners)
        if owner is not None:
            evidence.update(onnx_node=finding.node, module=owner)
            site = _site(root, owner, exported, finding.node or "")
            if site is not None:
                evidence["source"] = site
        return replace(
            finding,
            node=owner or finding.node,
            message=rename(finding.message),
            evidence=evidence,
            fix=rename(finding.fix),
        )

    def note(item: Note) -> Note:
        message = rename(item.message.replace(f"{folder}/", "").replace(folder, ""))
        return replace(item, message=message, node=owners.get(item.node or "", item.node))

    return replace(
        result,
        path=shown,
        sha256=None,  # of a temporary export, not of anything the user has
        findings=[renamed(f) for f in result.findings],
        notes=[note(n) for n in result.notes],
    )


def _renamer(owners: dict[str, str]) -> Callable[[str], str]:
    """Node ids in a message replaced by module paths (whole names only: ``/fc/Gemm`` not in ``/fc/Gemm_1``)."""
    if not owners:
        return lambda text: text
    names = "|".join(re.escape(node) for node in sorted(owners, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w/.:])({names})(?![\w/.:])")
    return lambda text: pattern.sub(lambda match: owners[match.group(1)] or match.group(1), text)


def _renamed_values(value: Any, owners: dict[str, str]) -> Any:
    """Evidence with every string that is exactly a node id replaced by its module path."""
    if isinstance(value, str):
        return owners.get(value) or value
    if isinstance(value, dict):
        return {key: _renamed_values(item, owners) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_renamed_values(item, owners) for item in value]
    return value


def _site(root: torch.nn.Module, owner: str, exported: Exported, node: str) -> dict[str, Any] | None:
    site = exported.call_sites.get(node) or definition_site(root, owner)
    return {"file": shown_file(site[0]), "line": site[1]} if site else None
