"""Checkpoint comparison (RL7xx): what changed between an older checkpoint (``--compare OLD``) and this one.

A learning rate that is too high cannot be seen in one file, but it can between two: the weights move by
as much as they weigh, biases are thrown far below zero, and units that were alive are dead. The
analysis loads OLD, matches it to this model by layer (activation node) and initializer names, and
measures per layer:

- the relative update ``‖W_new − W_old‖ / ‖W_old‖`` of the weight feeding the layer (RL702);
- how far each unit's bias (or BatchNorm beta) moved, in standard deviations of its pre-activation at
  OLD (``Δb / σ_old``, with σ from the static margin model of ``relulint.margins``; RL703);
- which units are dead in each checkpoint (RL701): by the static margins (margin below the margins analysis's ``-k``),
  by the probe (never positive on the same inputs) when it runs, and by the proofs (RL6xx) when an
  input domain is given.

Two checkpoints that do not match (a layer or a weight missing from OLD, or of another shape) are an
error for this model: a ``ModelError`` naming the first differences.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from relulint.compare_result import CompareResult, LayerChange, ProbeFeeding
from relulint.errors import ModelError
from relulint.graph import Graph, build_graph
from relulint.loader import load_model
from relulint.margins import margins
from relulint.margins.model import at_risk
from relulint.units import Layer, find_layers

if TYPE_CHECKING:
    from relulint.context import Context

MAX_LISTED = 3  # mismatches named in the error


def run_compare_analysis(ctx: Context) -> None:
    """Store a ``CompareResult`` in ``ctx.analyses.compare`` or, without --compare, say so in a note.

    Raises ``ModelError`` when OLD cannot be read or does not match this model.
    """
    from relulint.findings import Note

    if not ctx.config.compare:
        # Said only to a user who asked for these rules by name: every default run would repeat it.
        if any(pattern.upper().startswith("RL7") for pattern in ctx.config.select):
            ctx.notes.append(Note("info", "no --compare OLD.onnx given: the checkpoint rules RL7xx stay silent"))
        return
    result = compare_checkpoints(ctx, ctx.config.compare)
    ctx.analyses.compare = result
    for layer in ctx.layers:
        change = result.layers.get(layer.name)
        if change is None:
            continue
        metrics: dict[str, Any] = {}
        if change.relative_update is not None:
            metrics["relative_update"] = change.relative_update
        if change.bias_shift is not None and change.bias_shift.size and np.isfinite(change.bias_shift).any():
            metrics["bias_shift_min"] = float(np.nanmin(change.bias_shift))
        source = change.strongest_source()
        if source is not None:
            metrics["old_dead_fraction"] = float(change.dead_old[source].mean()) if change.units else 0.0
            metrics["newly_dead"] = int(change.newly_dead(source).size)
        ctx.metric(layer, **metrics)


def compare_checkpoints(ctx: Context, old_path: str) -> CompareResult:
    from relulint.context import Context as ContextClass

    try:
        old_loaded = load_model(old_path, ctx.config.max_model_size)
    except ModelError as exc:
        raise ModelError(ctx.path, f"cannot compare with {old_path}: {exc.problem}") from None
    old_graph = build_graph(old_loaded)
    old_ctx = ContextClass(loaded=old_loaded, graph=old_graph, layers=find_layers(old_graph), config=ctx.config)
    problems = mismatches(ctx.graph, ctx.layers, old_graph, {layer.name: layer for layer in old_ctx.layers})
    if problems:
        listed = "; ".join(problems[:MAX_LISTED]) + (
            f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        )
        raise ModelError(
            ctx.path,
            f"cannot compare with {old_path}: the checkpoints do not match ({listed}); compare two checkpoints "
            "of one architecture, exported with the same node and initializer names",
        )
    result = CompareResult(old_path, old_loaded.sha256, old_loaded.sha256 == ctx.loaded.sha256)
    new_margins, old_margins = margins(ctx), margins(old_ctx)
    result.margin_k = new_margins.settings.k
    old_layers = {layer.name: layer for layer in old_ctx.layers}
    for layer in ctx.layers:
        change = LayerChange(layer.name, layer.units)
        _weight_update(ctx, old_ctx, layer, old_layers[layer.name], change)
        new_model, old_model = new_margins.models.get(layer.name), old_margins.models.get(layer.name)
        if new_model is not None and old_model is not None and new_model.units == old_model.units:
            change.bias_shift = _bias_shift(new_model.mean, old_model.mean, old_model.std)
            change.dead_new["margins"] = at_risk(new_model, *new_margins.settings.risk(new_model))
            change.dead_old["margins"] = at_risk(old_model, *old_margins.settings.risk(old_model))
        result.layers[layer.name] = change
    _compare_probe(ctx, old_ctx, result)
    _compare_proofs(ctx, old_ctx, result)
    return result


def mismatches(graph: Graph, layers: list[Layer], old_graph: Graph, old_layers: dict[str, Layer]) -> list[str]:
    """Why OLD is not an earlier checkpoint of this model (empty when the two match)."""
    problems = []
    for layer in layers:
        old = old_layers.get(layer.name)
        if old is None:
            problems.append(f"layer '{layer.name}' is not in the old checkpoint")
            continue
        if (layer.linear, layer.weight) != (old.linear, old.weight):
            problems.append(
                f"layer '{layer.name}' is fed by '{layer.weight or layer.linear}' here and '{old.weight or old.linear}' there"
            )
        if layer.units != old.units:
            problems.append(f"layer '{layer.name}' has {layer.units} units here and {old.units} there")
    for name in sorted(set(old_layers) - {layer.name for layer in layers}):
        problems.append(f"layer '{name}' of the old checkpoint is not in this model")
    for name, tensor in graph.initializers.items():
        old = old_graph.initializers.get(name)
        if old is None:
            problems.append(f"initializer '{name}' is not in the old checkpoint")
        elif tuple(old.dims) != tuple(tensor.dims):
            problems.append(f"initializer '{name}' has shape {list(tensor.dims)} here and {list(old.dims)} there")
    return problems


def relative_update(new: np.ndarray, old: np.ndarray) -> float | None:
    """‖new − old‖ / ‖old‖ (Frobenius), or None when OLD is all zeros or either holds NaN/Inf."""
    new64, old64 = np.asarray(new, np.float64), np.asarray(old, np.float64)
    if not (np.all(np.isfinite(new64)) and np.all(np.isfinite(old64))):
        return None
    base = float(np.linalg.norm(old64))
    if base == 0.0:
        return None
    return float(np.linalg.norm(new64 - old64)) / base


def _weight_update(ctx: Context, old_ctx: Context, layer: Layer, old_layer: Layer, change: LayerChange) -> None:
    new, old = ctx.weights(layer), old_ctx.weights(old_layer)
    if new is None or old is None or new.shape != old.shape:
        return
    with np.errstate(all="ignore"):  # huge weights overflow the norm to inf: reported as such, not warned about
        change.relative_update = relative_update(new, old)
        change.weight_norm_new = float(np.linalg.norm(np.asarray(new, np.float64)))
        change.weight_norm_old = float(np.linalg.norm(np.asarray(old, np.float64)))


def _bias_shift(new_mean: np.ndarray, old_mean: np.ndarray, old_std: np.ndarray) -> np.ndarray:
    """How far each unit's mean pre-activation (its bias, or BatchNorm's beta) moved, in OLD's std."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(old_std > 0, (new_mean - old_mean) / np.where(old_std > 0, old_std, 1.0), np.nan)


def _compare_probe(ctx: Context, old_ctx: Context, result: CompareResult) -> None:
    """Dead units of both checkpoints measured by the probe on the same inputs (same seed, or --data)."""
    if not ctx.config.probe:
        return
    from relulint.findings import Note
    from relulint.probe import run_probe_analysis

    if ctx.analyses.probe is None:
        run_probe_analysis(ctx)  # this model's probe: the probe rules reuse it when they run
    new = ctx.analyses.probe
    if new is None:
        return  # the probe's note says why
    # The old checkpoint sees exactly the new one's samples: the same count (--samples auto stops where the
    # dead set of *this* model settles), batch and seed, so a unit alive in the old one only on samples the
    # new one never saw does not count as "died".
    old_ctx.config = replace(old_ctx.config, samples=max(new.samples, 1), batch=new.batch or old_ctx.config.batch)
    run_probe_analysis(old_ctx)
    old = old_ctx.analyses.probe
    if old is None:
        why = "; ".join(note.message for note in old_ctx.notes if note.kind == "skipped") or "no reason given"
        ctx.notes.append(
            Note("skipped", f"the probe did not run on {result.old_path} ({why}); RL701 uses the static evidence only")
        )
        return
    result.probe_inputs = ProbeFeeding(new.inputs, new.samples, old.samples, new.describe_inputs())
    for name, change in result.layers.items():
        new_layer, old_layer = new.layers.get(name), old.layers.get(name)
        if new_layer is None or old_layer is None or not (new_layer.ran and old_layer.ran):
            continue
        if new_layer.units == old_layer.units == change.units:
            change.dead_new["probe"] = np.asarray(new_layer.dead_mask, dtype=bool)
            change.dead_old["probe"] = np.asarray(old_layer.dead_mask, dtype=bool)


def _compare_proofs(ctx: Context, old_ctx: Context, result: CompareResult) -> None:
    """Provably dead units of both checkpoints, when an input domain is given (RL6xx's bounds)."""
    if not ctx.config.input_ranges:
        return
    from relulint.bounds.analysis import cached_bounds

    new_bounds, old_bounds = cached_bounds(ctx), cached_bounds(old_ctx)
    if new_bounds is None or old_bounds is None:
        return
    for name, change in result.layers.items():
        new, old = new_bounds.layers.get(name), old_bounds.layers.get(name)
        if new is None or old is None or new.units != old.units or not new.zero_output:
            continue
        change.dead_new["proof"] = _mask(new.units, new.dead)
        change.dead_old["proof"] = _mask(old.units, old.dead)


def _mask(size: int, indices: np.ndarray) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[indices] = True
    return mask
