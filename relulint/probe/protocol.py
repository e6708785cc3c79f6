"""What the parent and the probe's child process exchange, and the per-layer accumulators.

numpy only: the child imports this module before onnxruntime, and nothing heavier.

The instrumented model has, for every probed layer, a ``LayerTap``: the names of the
small graph outputs that carry that layer's per-channel reductions of one batch. The
child adds them up over batches in float64 (``TapTotals``) and sends the totals back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from relulint.probe.inputs import InputSpec

# What an allocation failure says, wherever it happens: a Python MemoryError, numpy ("Unable to allocate"),
# onnxruntime ("Failed to allocate", bad_alloc), glibc when a thread's stack or thread-local data cannot be
# mapped under the address-space limit ("cannot allocate memory for thread-local data"). One list, read by
# the child for the exceptions it catches and by the parent for a child that died with such a line.
MEMORY_WORDS = (
    "bad_alloc",
    "failed to allocate",
    "unable to allocate",
    "cannot allocate",
    "can't allocate",
    "out of memory",
    "memoryerror",
    "can't start new thread",
)
OUT_OF_MEMORY = "the probe ran out of memory under its limit (--probe-memory)"


def out_of_memory(text: str) -> bool:
    """Whether a failure's text says that an allocation failed."""
    lowered = text.lower()
    return any(word in lowered for word in MEMORY_WORDS)


# A tap's outputs, in this order. "pooled" taps give [N, C, 1, ...] per-sample means over the
# positions (global pooling keeps onnxruntime's blocked conv layout); their positions per sample
# are known when the model is instrumented, because asking the blocked tensor for its shape would
# make onnxruntime copy it out of that layout. "reduced" taps give [C] reductions over the whole
# batch plus the activation's "shape", which counts the values. Outputs are empty when the tap sits
# in an If branch that did not run.
STATS = ("max", "sum", "sumsq", "positive", "shape")
POOLED_STATS = STATS[:4]
POOLED = "pooled"
REDUCED = "reduced"


@dataclass(frozen=True)
class LayerTap:
    layer: str  # the layer's name (its activation node id)
    kind: str  # POOLED or REDUCED
    outputs: tuple[str, ...]  # graph output names, one per STATS (REDUCED) or POOLED_STATS entry
    units: int
    per_sample: int = 0  # POOLED: values per unit in one sample (the product of the spatial dims)
    offset: int = 0  # REDUCED taps of a group: where this layer's units start in the group's outputs
    width: int = 0  # REDUCED taps of a group: units of the whole group; 0 for a tap of its own
    # REDUCED taps of a tensor whose rank shape inference did not give: the rank the activation must have
    # at run time for its axis 1 to be the units (the tap's view works on any rank, its count does not).
    min_rank: int = 0


@dataclass(frozen=True)
class Job:
    """Everything the child needs; pickled to it on its stdin."""

    model_path: str
    specs: list[InputSpec]
    taps: list[LayerTap]
    batch: int
    samples: int  # at most this many; 0: no cap (every sample of the data, or until ``auto`` stops)
    distribution: str  # --input-dist
    data: str | None
    seed: int
    memory_limit: int  # bytes of address space
    threads: int = 0  # onnxruntime intra-op threads; 0: its default
    arena: bool = True  # onnxruntime's memory arena
    auto: bool = False  # --samples auto: stop once the dead units settle (see inputs.SamplingStop)
    stop_after: float = 0.0  # seconds from the job's arrival after which no new batch starts; 0: no limit
    # The probe chose some dims itself: one sample is run first, so that a size onnxruntime rejects is
    # told after one cheap run, not after a whole batch (the parent then retries other sizes).
    trial_run: bool = False


@dataclass
class TapTotals:
    """One layer's sums over every batch in which its tensor was computed."""

    units: int  # 0: not known before the run, set from the first batch's reductions
    positive: np.ndarray = field(init=False)  # values > 0, per unit
    total: np.ndarray = field(init=False)
    total_sq: np.ndarray = field(init=False)
    maximum: np.ndarray = field(init=False)
    positions: int = 0  # values per unit seen (samples x positions per sample)
    samples: int = 0  # model samples whose batch computed this layer
    low_rank: tuple[int, ...] | None = None  # the activation's shape when its rank was below the tap's min_rank

    def __post_init__(self) -> None:
        self.positive = np.zeros(self.units, np.float64)
        self.total = np.zeros(self.units, np.float64)
        self.total_sq = np.zeros(self.units, np.float64)
        self.maximum = np.full(self.units, -np.inf, np.float64)

    def add(self, tap: LayerTap, values: list[np.ndarray], rows: int) -> None:
        """Fold one batch's tap outputs (in STATS order) into the totals (``units`` = the tap's width)."""
        high, mean, mean_sq, positive = values[:4]
        if high.size == 0:
            return  # the If branch holding this layer did not run on this batch
        if tap.kind == REDUCED and len(values[4]) < tap.min_rank:
            self.low_rank = tuple(int(d) for d in values[4])  # no axis of units: this layer is not counted
            return
        if not self.units:
            self.units = int(high.size)  # REDUCED taps give [C]: the count shape inference did not know
            self.__post_init__()
        if tap.kind == POOLED:
            per_sample = tap.per_sample
            count = high.shape[0]
            self.total += _per_sample(mean, count, self.units).sum(axis=0) * per_sample
            self.total_sq += _per_sample(mean_sq, count, self.units).sum(axis=0) * per_sample
            self.positive += _per_sample(positive, count, self.units).sum(axis=0) * per_sample
            self.maximum = np.maximum(self.maximum, _per_sample(high, count, self.units).max(axis=0))
            self.positions += count * per_sample
        else:
            high, mean, mean_sq, positive = (np.asarray(v, np.float64).reshape(self.units) for v in values[:4])
            self.total += mean
            self.total_sq += mean_sq
            self.positive += positive
            self.maximum = np.maximum(self.maximum, high)
            self.positions += int(np.prod(values[4], dtype=np.int64)) // max(self.units, 1)
        self.samples += rows

    def part(self, offset: int, units: int) -> TapTotals:
        """The totals of ``units`` units from ``offset``: one layer of a group reduced together."""
        piece = TapTotals(units)
        for name in ("positive", "total", "total_sq", "maximum"):
            setattr(piece, name, getattr(self, name)[offset : offset + units].copy())
        piece.positions, piece.samples = self.positions, self.samples
        return piece


def _per_sample(values: np.ndarray, samples: int, units: int) -> np.ndarray:
    """[N, C, 1, ...] pooled values as float64 [N, C]."""
    return np.asarray(values, np.float64).reshape(samples, units)


@dataclass
class InputTotals:
    """Per-channel sums of one real-data input, for RL505."""

    axis: int
    count: int = 0  # values per channel
    total: np.ndarray | None = None
    total_sq: np.ndarray | None = None

    def add(self, array: np.ndarray) -> None:
        values = np.moveaxis(np.asarray(array, np.float64), self.axis, -1)
        values = values.reshape(-1, values.shape[-1])
        if self.total is None:
            self.total = np.zeros(values.shape[1])
            self.total_sq = np.zeros(values.shape[1])
        if values.shape[1] != self.total.shape[0]:
            return  # a file whose channel count differs: the model run reports the mismatch
        self.total += values.sum(axis=0)
        self.total_sq += np.square(values).sum(axis=0)
        self.count += values.shape[0]


@dataclass
class Outcome:
    """What the child sends back when it finishes (or why it could not)."""

    totals: dict[str, TapTotals] = field(default_factory=dict)
    inputs: dict[str, InputTotals] = field(default_factory=dict)
    samples: int = 0
    batch: int = 0  # rows per run actually used
    problem: str | None = None  # why the probe stopped, None when it ran to the end
    stopped: str = ""  # why sampling ended: "cap", "data" (all used), "settled", "time", "auto-limit"
    available: int = 0  # samples the --data source holds (0: synthetic, or not known)
    session_seconds: float = 0.0
    run_seconds: float = 0.0
    peak_rss: int = 0  # bytes, the child's own high-water mark
