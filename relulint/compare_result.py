"""What the checkpoint comparison measures (``relulint.compare``): per layer, the two checkpoints side by side.

The types sit below ``relulint.context`` (which holds a ``CompareResult``), so they import nothing of relulint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SOURCES = ("probe", "proof", "margins")  # ways a unit is judged dead, strongest evidence first


@dataclass
class LayerChange:
    """One layer of the two checkpoints side by side (masks are per unit, None when unknown)."""

    layer: str
    units: int | None
    relative_update: float | None = None
    weight_norm_old: float | None = None
    weight_norm_new: float | None = None
    bias_shift: np.ndarray | None = None  # (mean_new - mean_old) / std_old per unit
    dead_old: dict[str, np.ndarray] = field(default_factory=dict)  # source -> bool mask
    dead_new: dict[str, np.ndarray] = field(default_factory=dict)

    def strongest_source(self) -> str | None:
        """The strongest source that counted dead units in both checkpoints: the one RL701, the JSON's
        ``newly_dead`` metric and the HTML report count this layer's deaths by."""
        return next((s for s in SOURCES if s in self.dead_old and s in self.dead_new), None)

    def newly_dead(self, source: str) -> np.ndarray:
        """Units alive in OLD and dead here, by one source (indices)."""
        if source not in self.dead_old or source not in self.dead_new:
            return np.arange(0)
        return np.flatnonzero(self.dead_new[source] & ~self.dead_old[source])

    def revived(self, source: str) -> np.ndarray:
        if source not in self.dead_old or source not in self.dead_new:
            return np.arange(0)
        return np.flatnonzero(self.dead_old[source] & ~self.dead_new[source])

    def bias_shift_summary(self) -> tuple[float | None, float | None]:
        """(lowest, mean) finite bias shift of the layer's units; None where there is none."""
        if self.bias_shift is None:
            return None, None
        finite = self.bias_shift[np.isfinite(self.bias_shift)]
        return (float(finite.min()), float(finite.mean())) if finite.size else (None, None)

    def dead_counts(self, source: str) -> DeadCounts | None:
        """The layer's dead units in both checkpoints by one source; None when it did not count both."""
        if source not in self.dead_old or source not in self.dead_new:
            return None
        old, new = self.dead_old[source], self.dead_new[source]
        return DeadCounts(
            old=int(old.sum()),
            new=int(new.sum()),
            fraction_old=float(old.mean()) if old.size else 0.0,
            fraction_new=float(new.mean()) if new.size else 0.0,
            newly_dead=int(self.newly_dead(source).size),
            revived=int(self.revived(source).size),
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "units": self.units,
            "relative_update": self.relative_update,
            "weight_norm_old": self.weight_norm_old,
            "weight_norm_new": self.weight_norm_new,
        }
        if self.bias_shift is not None and self.bias_shift.size:
            data["bias_shift_min"], data["bias_shift_mean"] = self.bias_shift_summary()
        for source in SOURCES:
            counts = self.dead_counts(source)
            if counts is not None:
                data[source] = counts.to_json()
        return data


@dataclass(frozen=True)
class DeadCounts:
    """One layer's dead units in OLD and in this checkpoint, by one source."""

    old: int
    new: int
    fraction_old: float
    fraction_new: float
    newly_dead: int  # dead here, alive in OLD
    revived: int  # dead in OLD, alive here

    def to_json(self) -> dict[str, Any]:
        return {
            "dead_old": self.old,
            "dead_new": self.new,
            "dead_fraction_old": self.fraction_old,
            "dead_fraction_new": self.fraction_new,
            "newly_dead": self.newly_dead,
            "revived": self.revived,
        }


@dataclass(frozen=True)
class ProbeFeeding:
    """How the probe fed both checkpoints (the same samples), when it ran on both."""

    inputs: str  # "synthetic" or "data"
    samples: int
    old_samples: int
    described: str  # e.g. "32 synthetic samples (normal(mean 0, std 1))"

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "samples": self.samples,
            "old_samples": self.old_samples,
            "described": self.described,
        }


@dataclass
class CompareResult:
    old_path: str
    old_sha256: str
    same_file: bool
    layers: dict[str, LayerChange] = field(default_factory=dict)
    margin_k: float = 3.0
    probe_inputs: ProbeFeeding | None = None

    @property
    def sources(self) -> list[str]:
        """The sources that counted dead units in this checkpoint in any layer, strongest first."""
        return [s for s in SOURCES if any(s in c.dead_new for c in self.layers.values())]

    def to_json(self) -> dict[str, Any]:
        return {
            "old": {"path": self.old_path, "sha256": self.old_sha256},
            "same_file": self.same_file,
            "sources": self.sources,
            "margin_k": self.margin_k,
            "probe": self.probe_inputs.to_json() if self.probe_inputs is not None else None,
            "layers": {name: change.to_json() for name, change in self.layers.items()},
        }
