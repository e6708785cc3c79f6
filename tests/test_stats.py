"""Weight statistics computed many layers at a time give exactly the numbers computed one layer at a time."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest

from relulint.config import Config
from relulint.context import Context
from relulint.graph import build_graph
from relulint.loader import load_model
from relulint.modelkit import ModelBuilder
from relulint.stats import WeightStats, batched_weight_stats, streamed_weight_stats
from relulint.units import find_layers


def differences(batched: WeightStats, single: WeightStats) -> list[str]:
    """Fields whose values are not identical (bit for bit; NaN equals NaN)."""
    different = []
    for entry in dataclasses.fields(WeightStats):
        a, b = getattr(batched, entry.name), getattr(single, entry.name)
        if isinstance(a, np.ndarray):
            same = a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
        elif isinstance(a, float):
            same = a == b or (np.isnan(a) and np.isnan(b))
        else:
            same = a == b
        if not same:
            different.append(f"{entry.name}: {a!r} != {b!r}")
    return different


@pytest.mark.parametrize("shape", [(16, 16), (3, 7), (1, 5), (5, 1), (64, 147), (2, 2)])
@pytest.mark.parametrize("units_on_rows", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_statistics_equal_the_single_ones_including_defective_layers(shape, units_on_rows, dtype):
    rng = np.random.default_rng(sum(shape))
    stack = (rng.standard_normal((7, *shape)) * rng.uniform(0.01, 3.0, size=(7, 1, 1))).astype(dtype)
    stack[1, 0] = 0.0  # a zero row (or column): left out of the dispersion, computed on its own
    stack[2] = 0.0  # all zeros
    stack[3, 0, 0] = np.nan
    stack[4, -1, -1] = np.finfo(dtype).max  # overflows the squares: rescaled on its own
    stack[5, 0, -1] = -np.inf
    units, per_unit = shape if units_on_rows else shape[::-1]
    batched = batched_weight_stats(stack, units_on_rows, [per_unit + 1] * 7, [units + 2] * 7)
    for index, stats in enumerate(batched):
        single = streamed_weight_stats([stack[index]], units_on_rows, units, per_unit, per_unit + 1, units + 2)
        assert differences(stats, single) == [], index


def test_batched_statistics_see_each_layer_apart():
    """Layers in one stack do not mix: each gets its own mean, extremes and non-finite count."""
    stack = np.stack([np.full((4, 4), 1.0), np.full((4, 4), -2.0), np.where(np.eye(4) > 0, np.nan, 0.5)]).astype(
        np.float32
    )
    first, second, third = batched_weight_stats(stack, True, [4] * 3, [4] * 3)
    assert (first.mean, first.min, first.max, first.nonfinite) == (1.0, 1.0, 1.0, 0)
    assert (second.mean, second.min, second.max, second.nonfinite) == (-2.0, -2.0, -2.0, 0)
    assert third.nonfinite == 4 and third.nonfinite_kinds["nan"] == 4


def test_context_batches_give_the_metrics_one_by_one_does(tmp_path):
    """A model of many small alike layers (the case batching is for), plus one of another shape and a
    transposed Gemm: every layer's statistics and metrics equal those computed layer by layer."""
    b = ModelBuilder(seed=3)
    x = b.input("x", ["n", 16])
    for index in range(12):
        weight = b.he((16, 16), 16) if index != 5 else np.zeros((16, 16), np.float32)
        x = b.relu(b.gemm(x, 16, 16, weight=weight, name=f"fc{index}"), f"relu{index}")
    x = b.relu(b.gemm(x, 16, 8, name="narrow"), "relu_narrow")
    path = tmp_path / "alike.onnx"
    onnx.save(b.build([b.gemm(x, 8, 2, name="head")]), path)

    def context() -> Context:
        loaded = load_model(str(path))
        graph = build_graph(loaded)
        return Context(loaded=loaded, graph=graph, layers=find_layers(graph), config=Config(probe=False))

    batched, single = context(), context()
    batched.batch_weight_stats(batched.layers)
    assert len(batched._stats) == len(batched.layers) == 13  # every weight here is small: all were batched
    for one, other in zip(batched.layers, single.layers):
        assert differences(batched.weight_stats(one), single.weight_stats(other)) == [], one.name
    # as text: NaN (the all-zero layer's kurtosis) equals NaN there, and each layer's keys keep their order
    assert {name: json.dumps(values) for name, values in batched.metrics.items()} == {
        name: json.dumps(values) for name, values in single.metrics.items()
    }
