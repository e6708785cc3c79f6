"""One activation's counts while a module trains: running totals on the device, judged once per window.

``LayerTotals.add`` adds two on-device reductions per unit to the window's totals (how many values were
positive and their sum); ``LayerTotals.judge`` turns them into a ``LayerCheck`` (dead, rarely active,
tau-dormant and newly dead units) and starts the next window. ``relulint.torch.monitor`` wires them to
the module's forwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# grad_fn names of the ops whose outputs have their units (channels) on axis 1 of a 3-D tensor
CHANNEL_FIRST_OPS = ("Convolution", "BatchNorm", "GroupNorm", "InstanceNorm")


@dataclass(frozen=True)
class LayerCheck:
    """One layer at one check: what the window since the previous check measured."""

    layer: str
    step: int  # training forwards seen when the check ran
    epoch: int | None
    units: int
    samples: int  # samples (batch items) in the window
    values: int  # values per unit in the window (samples x positions)
    dead: int  # never positive in the window
    rarely_active: int  # positive on under 1% of the values, but not dead
    dormant: int  # ReDo score <= tau
    died: int  # dead now, alive at the previous check

    @property
    def dead_fraction(self) -> float:
        return self.dead / self.units if self.units else 0.0

    @property
    def dormant_fraction(self) -> float:
        return self.dormant / self.units if self.units else 0.0


@dataclass
class LayerTotals:
    """Running totals of one activation, on the device of its activations."""

    name: str
    module: str  # qualified name of the module (or of the module whose forward calls the function)
    source: tuple[str, int] | None
    axis: int
    positive: torch.Tensor | None = None  # float64 [units], whole numbers: positive values per unit
    total: torch.Tensor | None = None  # float64 [units], sum of the outputs (|a| for a ReLU)
    samples: int = 0
    values: int = 0
    dead_since: np.ndarray | None = None  # step at which each unit was first seen dead in a row; -1 alive
    last_positive: np.ndarray | None = None  # the last check's positive count per unit, for callers

    def add(self, output: torch.Tensor) -> None:
        output = output.detach()
        axis = self.axis % output.dim()
        units = output.shape[axis]
        reduce: tuple[int, ...]
        if axis == output.dim() - 1:  # [..., units]: one row per sample and position
            view, reduce = output.reshape(-1, units), (0,)
        else:  # [batch, units, positions...]: the positions of a unit are contiguous
            view, reduce = output.reshape(output.shape[:axis].numel(), units, -1), (2, 0)
        per_call = view.numel() // max(1, units)
        # A ReLU's output is >= 0, so sign() is 1 exactly where it is positive: summing it took a third of
        # the time of counting (x > 0) or count_nonzero on CPU (bench/torch_bench.py), and float32 sums of
        # 0/1 are exact below 2**24 values; above, the integer count.
        signs = torch.sign(view) if per_call < 2**24 else (view > 0).to(torch.float64)
        positive, total = signs, view
        for dim in reduce:
            positive, total = positive.sum(dim), total.sum(dim)
        if self.positive is None or self.total is None or self.positive.shape != positive.shape:
            self.positive = positive.to(torch.float64)
            self.total = total.to(torch.float64)
            self.samples = self.values = 0
        else:
            self.positive += positive
            self.total += total
        self.samples += int(output.shape[0]) if axis != 0 else 1
        self.values += per_call

    def judge(self, step: int, epoch: int | None, tau: float, rare: float) -> LayerCheck | None:
        """The window's check, and a fresh window; None when no forward reached the layer yet."""
        if self.positive is None or self.total is None:
            return None
        positive = self.positive.cpu().numpy().astype(np.int64)  # a copy: the buffer is zeroed below
        mean = (self.total / max(1, self.values)).cpu().numpy()
        dead_now = positive == 0
        rate = positive / max(1, self.values)
        layer_mean = float(mean.mean()) if mean.size else 0.0
        dormant = mean <= tau * layer_mean if layer_mean > 0 else np.ones_like(dead_now)
        died = 0
        if self.dead_since is None or self.dead_since.shape != dead_now.shape:
            self.dead_since = np.where(dead_now, step, -1)
        else:
            died = int((dead_now & (self.dead_since < 0)).sum())
            self.dead_since = np.where(dead_now, np.where(self.dead_since < 0, step, self.dead_since), -1)
        self.last_positive = positive
        item = LayerCheck(
            layer=self.name,
            step=step,
            epoch=epoch,
            units=int(positive.size),
            samples=self.samples,
            values=self.values,
            dead=int(dead_now.sum()),
            rarely_active=int(((positive > 0) & (rate < rare)).sum()),
            dormant=int(dormant.sum()),
            died=died,
        )
        self.positive.zero_()
        self.total.zero_()
        self.samples = self.values = 0
        return item


def unit_axis(pre_activation: torch.Tensor | None, output: torch.Tensor) -> int:
    """Units on axis 1 for images and conv features, on the last axis for Linear outputs ([batch, tokens, features])."""
    if output.dim() != 3:
        return 1 if output.dim() >= 2 else 0
    grad_fn = getattr(pre_activation, "grad_fn", None) if pre_activation is not None else None
    name = type(grad_fn).__name__ if grad_fn is not None else ""
    return 1 if any(op in name for op in CHANNEL_FIRST_OPS) else -1
