"""The probe's measurements as the rules and reports see them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from relulint.probe.protocol import InputTotals, TapTotals

RARE = 0.01  # "rarely active": positive on fewer than 1% of the values
CONFIDENCE = 0.95  # of the upper bound on a never-positive unit's firing rate
SYNTHETIC = "synthetic"
DATA = "data"
PROVEN = "proven"


def firing_rate_bound(samples: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper bound on the rate at which a unit fires, when it never fired on ``samples`` samples.

    Exact binomial (Clopper-Pearson) for zero positives in N independent samples: the rate p with
    (1 - p)^N = 1 - confidence. Samples, not positions, are counted: the positions of one sample are
    correlated, so they are not independent trials.
    """
    if samples <= 0:
        return 1.0
    return 1.0 - float((1.0 - confidence) ** (1.0 / samples))


def samples_for_bound(rate: float, confidence: float = CONFIDENCE) -> int:
    """The fewest samples with which never-positive means "fires on under ``rate``" at that confidence."""
    if not 0.0 < rate < 1.0:
        return 1
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-rate))


def rate_text(rate: float) -> str:
    """A firing rate bound as people read it: 0.17%, 4.6%, 1%."""
    return f"{100 * rate:.2g}%"


@dataclass
class LayerMeasure:
    """One layer's units over every sample that reached it."""

    name: str
    units: int
    samples: int  # model samples whose batch computed the layer (0: its If branch never ran)
    positions: int  # values per unit: samples x positions per sample
    positive: np.ndarray  # how many values were > 0, per unit
    maximum: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    # The activation outputs a constant 0, with no gradient, on its whole negative side (ReLU, ReLU6,
    # ThresholdedRelu). For the variants (LeakyRelu, Elu, HardSwish, ...) a unit that is never positive
    # still passes a gradient: it is dead only where its output is exactly 0 on every value.
    zero_below: bool = True

    @classmethod
    def from_totals(cls, name: str, totals: TapTotals, zero_below: bool = True) -> LayerMeasure:
        count = max(totals.positions, 1)
        mean = totals.total / count
        variance = np.maximum(totals.total_sq / count - mean**2, 0.0)
        return cls(
            name=name,
            units=totals.units,
            samples=totals.samples,
            positions=totals.positions,
            positive=totals.positive,
            maximum=totals.maximum,
            mean=mean,
            std=np.sqrt(variance),
            zero_below=zero_below,
        )

    @property
    def ran(self) -> bool:
        return self.samples > 0 and self.positions > 0

    @property
    def positive_rate(self) -> np.ndarray:
        return self.positive / max(self.positions, 1)

    @property
    def never_positive_mask(self) -> np.ndarray:
        """Never > 0 on any sample at any position (NaN outputs count as not positive)."""
        return ~(self.positive > 0)

    @property
    def dead_mask(self) -> np.ndarray:
        """Never positive and so passing no gradient: for a variant, an output of exactly 0 everywhere."""
        if self.zero_below:
            return self.never_positive_mask
        mask: np.ndarray = self.never_positive_mask & (self.maximum == 0) & (self.mean == 0)
        return mask

    @property
    def never_positive(self) -> int:
        return int(self.never_positive_mask.sum()) if self.ran else 0

    @property
    def firing_rate_bound(self) -> float:
        """95% upper bound on the firing rate of each unit that never fired here."""
        return firing_rate_bound(self.samples)

    @property
    def sparsity(self) -> float | None:
        """The share of the layer's outputs that are zero, over every position of every sample: what
        activation-sparsity work reads. None for a variant (its outputs below zero are not zero) or no run."""
        if not self.zero_below or not self.ran or not self.units:
            return None
        return 1.0 - float(self.positive.sum()) / (self.units * self.positions)

    @property
    def rarely_active_mask(self) -> np.ndarray:
        """Positive, but on under 1% of the values (dead units are not counted here)."""
        return (self.positive > 0) & (self.positive_rate < RARE)

    @property
    def dead(self) -> int:
        return int(self.dead_mask.sum()) if self.ran else 0

    @property
    def rarely_active(self) -> int:
        return int(self.rarely_active_mask.sum()) if self.ran else 0

    def dead_units_worst_first(self) -> list[int]:
        """Dead units, those whose largest output is lowest first (furthest from coming back)."""
        indices = np.flatnonzero(self.dead_mask)
        return [int(i) for i in indices[np.argsort(self.maximum[indices], kind="stable")]]

    def to_json(self, evidence: str) -> dict[str, Any]:
        return {
            "units": self.units,
            "samples": self.samples,
            "evidence": evidence,
            "firing_rate_bound": self.firing_rate_bound,
            "dead": self.dead,
            "never_positive": self.never_positive,
            "rarely_active": self.rarely_active,
            "sparsity": self.sparsity,
            "positive_rate": self.positive_rate,
            "max": self.maximum,
            "mean": self.mean,
            "std": self.std,
        }


@dataclass
class InputMeasure:
    """Per-channel mean and std of one real-data input (RL505), and the linear op it goes straight into."""

    name: str
    axis: int
    count: int
    mean: np.ndarray
    std: np.ndarray
    linear: str = ""  # the node id of the linear op the input reaches through data-moving ops only

    @classmethod
    def from_totals(cls, name: str, totals: InputTotals, linear: str = "") -> InputMeasure | None:
        if not totals.count or totals.total is None or totals.total_sq is None:
            return None
        mean = totals.total / totals.count
        std = np.sqrt(np.maximum(totals.total_sq / totals.count - mean**2, 0.0))
        return cls(name, totals.axis, totals.count, mean, std, linear)


@dataclass
class ProbeResult:
    inputs: str  # "synthetic" or "data"
    samples: int
    batch: int
    layers: dict[str, LayerMeasure] = field(default_factory=dict)
    distribution: str | None = None  # how synthetic inputs were drawn, e.g. "normal(mean 0, std 1)"
    data: str | None = None  # the --data path
    data_inputs: dict[str, InputMeasure] = field(default_factory=dict)
    fed_inputs: tuple[str, ...] = ()  # the model inputs the probe fed (the main graph's, initializers excluded)
    skipped: dict[str, str] = field(default_factory=dict)  # layer -> why it was not probed
    stopped: str = ""  # why sampling ended: "cap", "data", "settled" (--samples auto), "time", "auto-limit"
    available: int = 0  # samples the --data source holds (0: synthetic inputs, or not known)
    seconds: float = 0.0  # the child's session creation and runs
    peak_rss: int = 0  # bytes, the probe process's high-water mark (for benchmarks; not in the JSON)

    @property
    def synthetic(self) -> bool:
        return self.inputs == SYNTHETIC

    def describe_inputs(self, samples: int | None = None) -> str:
        """How the samples were made, for finding messages (``samples``: those that reached a layer)."""
        count = self.samples if samples is None else samples
        if self.synthetic:
            return f"{count:,} synthetic samples ({self.distribution})"
        return f"{count:,} samples of real data"

    def caveat(self) -> str:
        """What every finding made on synthetic inputs adds to its message."""
        if not self.synthetic:
            return ""
        return "; measured on synthetic inputs, which can make healthy units look dead: pass real data with --data"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"inputs": self.inputs, "samples": self.samples, "batch": self.batch}
        if self.distribution:
            data["distribution"] = self.distribution
        if self.data:
            data["data"] = self.data
            if self.available:
                data["available"] = self.available
        if self.stopped:
            data["stopped"] = self.stopped
        data["confidence"] = CONFIDENCE
        data["layers"] = {name: measure.to_json(self.inputs) for name, measure in self.layers.items()}
        if self.skipped:
            data["skipped"] = dict(self.skipped)
        # seconds and peak_rss stay out: reports must be the same on every run of the same model
        return data
