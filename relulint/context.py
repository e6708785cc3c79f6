"""What a rule's ``check`` sees: the model, its graph, the unit view and the analyses' results."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from relulint.analyses import Analyses
from relulint.config import Config
from relulint.findings import Note
from relulint.graph import Graph
from relulint.layer_values import bias_vector, weight_blocks, weight_matrix
from relulint.loaded import LoadedModel
from relulint.stats import (
    BATCH_BYTES,
    BATCH_MAX_ELEMENTS,
    WeightStats,
    batched_weight_stats,
    streamed_weight_stats,
    weight_stats,
)
from relulint.tensors import TensorUnavailable
from relulint.units import Layer, OutputPath, norm_parameters, output_paths, subgraph_output_owners

T = TypeVar("T")


@dataclass
class Context:
    loaded: LoadedModel
    graph: Graph
    layers: list[Layer]
    config: Config
    notes: list[Note] = field(default_factory=list)
    # Per-layer numbers the analyses measured, for the reports (layer name -> metric -> value).
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Results of the analyses beyond the static graph (the probe, bounds, comparison), None until they ran.
    analyses: Analyses = field(default_factory=Analyses)
    _stats: dict[str, WeightStats | None] = field(default_factory=dict, repr=False)
    _bias: dict[str, np.ndarray | None] = field(default_factory=dict, repr=False)
    _derived: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> str:
        return self.loaded.path

    def weights(self, layer: Layer) -> np.ndarray | None:
        """``[units, fan_in]`` weight matrix (read on demand, not cached: it may be large)."""
        return weight_matrix(self.graph, layer)

    def weight_stats(self, layer: Layer) -> WeightStats | None:
        if layer.name not in self._stats:
            self._stats[layer.name] = stats = self._compute_weight_stats(layer)
            if stats is not None:
                self.metric(layer, **stats.to_json())
        return self._stats[layer.name]

    def batch_weight_stats(self, layers: Iterable[Layer]) -> None:
        """Compute (and keep) the statistics of the layers' small stored weights many at a time: alike weights
        (one shape, dtype and layout) are stacked in batches of BATCH_BYTES, the same numbers ``weight_stats``
        gives one by one. Other layers are left to ``weight_stats``."""
        pending: dict[tuple[tuple[int, ...], str, bool], list[tuple[Layer, np.ndarray]]] = {}
        held = 0
        for layer in layers:
            if layer.name in self._stats or not layer.fan_in or not layer.fan_out:
                continue
            stored = weight_blocks(self.graph, layer)
            if stored is None or stored.units * stored.per_unit > BATCH_MAX_ELEMENTS:
                continue
            try:  # copied: blocks read from a file share one buffer
                matrix = np.concatenate([np.array(block) for block in stored.blocks])
            except TensorUnavailable:
                continue
            pending.setdefault((matrix.shape, matrix.dtype.str, stored.units_on_rows), []).append((layer, matrix))
            held += matrix.nbytes
            if held >= BATCH_BYTES:
                self._store_batches(pending)
                pending, held = {}, 0
        self._store_batches(pending)

    def _store_batches(self, pending: dict[tuple[tuple[int, ...], str, bool], list[tuple[Layer, np.ndarray]]]) -> None:
        for (_shape, _dtype, units_on_rows), members in pending.items():
            stack = np.stack([matrix for _, matrix in members])
            fans = [(layer.fan_in or 0, layer.fan_out or 0) for layer, _ in members]
            computed = batched_weight_stats(stack, units_on_rows, [f[0] for f in fans], [f[1] for f in fans])
            for (layer, _), stats in zip(members, computed):
                self._stats[layer.name] = stats
                self.metric(layer, **stats.to_json())

    def _compute_weight_stats(self, layer: Layer) -> WeightStats | None:
        if not layer.fan_in or not layer.fan_out:
            return None
        # An initializer is streamed in row blocks (a 4 GB weight costs one block of memory); a folded
        # weight is already in memory.
        stored = weight_blocks(self.graph, layer)
        if stored is not None:
            try:
                return streamed_weight_stats(
                    stored.blocks, stored.units_on_rows, stored.units, stored.per_unit, layer.fan_in, layer.fan_out
                )
            except TensorUnavailable:
                return None
        matrix = self.weights(layer)
        if matrix is None or matrix.ndim != 2 or not matrix.shape[0]:
            return None
        return weight_stats(matrix, layer.fan_in, layer.fan_out)

    def bias(self, layer: Layer) -> np.ndarray | None:
        if layer.name not in self._bias:
            self._bias[layer.name] = bias_vector(self.graph, layer)
        return self._bias[layer.name]

    def norm_parameters(self, layer: Layer) -> dict[str, np.ndarray | None]:
        """gamma, beta (and BatchNorm's mean, var) of the layer's normalization; {} without one."""
        return norm_parameters(self.graph, layer)

    def output_paths(self, layer: Layer, final_ops: set[str]) -> tuple[list[OutputPath], bool]:
        """Model outputs the layer's values reach unchanged or through one of ``final_ops``, and whether
        other computation consumes them too."""
        owners = self.cached("units.subgraph_output_owners", lambda ctx: subgraph_output_owners(ctx.graph))
        return output_paths(self.graph, layer.output, final_ops, owners)

    def cached(self, key: str, compute: Callable[[Context], T]) -> T:
        """A model-wide derived value (e.g. propagated input scales), computed once on first use; typed as
        ``compute`` returns (one key, one kind of value)."""
        if key not in self._derived:
            self._derived[key] = compute(self)
        value: T = self._derived[key]
        return value

    def metric(self, layer: Layer, **values: Any) -> None:
        self.metrics.setdefault(layer.name, {}).update(values)

    def layer_records(self) -> list[dict[str, Any]]:
        records = []
        for layer in self.layers:
            record = layer.to_json()
            record["metrics"] = self.metrics.get(layer.name, {})
            records.append(record)
        return records
