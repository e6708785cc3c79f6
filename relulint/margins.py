"""Static bias margins: how far below zero each unit's pre-activation sits, from the weights alone.

Every ReLU-family unit is modelled by a Gaussian pre-activation ``N(mean_j, std_j^2)``:

- a layer with no normalization between its linear op and the activation (judged by RL201):
  ``mean_j = bias_j`` and ``std_j = ||w_j||_2 * sigma_in``, where ``sigma_in`` is the root mean square of the
  linear op's input, propagated statically through the graph (see ``propagate_scales``);
- a layer with a normalization (judged by RL202): the normalized value is ``N(0, 1)`` per channel, so
  ``mean_j = beta_j`` and ``std_j = |gamma_j|`` (times any constant scale and plus any constant shift
  between the normalization and the activation).

When a residual join sits before the activation, the shortcut's propagated mean is added to ``mean_j`` and
its variance to ``std_j^2`` (the shortcut is assumed independent of the main branch).

The unit's *margin* is ``mean_j / std_j``: the number of standard deviations its bias puts it below (or
above) zero. A unit whose margin is below ``-k`` is positive on fewer than ``Phi(-k)`` of Gaussian inputs
(0.13% at k = 3): it is at risk of never switching on.

Approximations, on purpose: the margin follows the documented definition ``b / (||w|| * sigma_in)``
with ``sigma_in`` the RMS of the input, so it leaves out the mean term ``mu_in * sum(w_j)``; the
propagation of scales from layer to layer keeps it (see ``_unit_model``). Input coordinates are treated as
independent; average and max pooling keep the RMS of their input (an overestimate after averaging, which
makes margins smaller in magnitude, so the rules err towards silence). Where a scale cannot be propagated,
``sigma_in`` falls back to 1.0 and ``input_scale_source`` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from relulint.findings import Severity
from relulint.graph import Graph, Node
from relulint.ops import LEAKY_DEFAULT_SLOPE, LINEAR_OPS, NORM_OPS, PASS_THROUGH_OPS, SCALE_KEEPING_OPS
from relulint.stats import WeightStats
from relulint.tensors import TensorUnavailable, element_dtype, row_blocks, tensor_shape
from relulint.units import DECOMPOSED_LAYERNORM, Layer, norm_parameters

if TYPE_CHECKING:
    from relulint.context import Context

BIAS_RULE = "RL201"  # judges layers without normalization
NORM_RULE = "RL202"  # judges layers with normalization
CONSTANT_RULE = "RL102"
JUDGED_BY_BIAS = "bias"
JUDGED_BY_NORM = "norm"
FALLBACK_SCALE = 1.0
TINY_SCALE = 1e-12  # floor of sigma_in: an input that is (about) always zero leaves only the bias
MAX_WALK = 64
# Slope of the negative side of the ReLU variants whose output moments are computed with it; the other
# variants (Elu, Gelu, Mish, ...) are treated as ReLU: their negative side is small and bounded.


@dataclass(frozen=True)
class Scale:
    """A tensor's statically estimated mean and root mean square, or why there is none."""

    mean: float | None
    rms: float | None
    source: str
    layer: str | None = None  # the nearest upstream ReLU layer the estimate went through

    @property
    def known(self) -> bool:
        return self.rms is not None and self.mean is not None and math.isfinite(self.rms) and math.isfinite(self.mean)

    @property
    def variance(self) -> float:
        return max((self.rms or 0.0) ** 2 - (self.mean or 0.0) ** 2, 0.0)


def unknown(reason: str) -> Scale:
    return Scale(None, None, reason)


@dataclass(frozen=True)
class UnitModel:
    """The Gaussian model of one layer's pre-activations, one entry per unit."""

    layer: str
    judged_by: str  # "bias" (RL201) or "norm" (RL202)
    mean: np.ndarray
    std: np.ndarray
    margins: np.ndarray  # mean / std; NaN where std is 0 and the unit is a weight rule's business
    input_scale: float  # sigma_in of the linear op's input (NaN when the layer has no linear op)
    input_scale_source: str
    input_scale_fallback: bool
    upstream: str | None = None  # the ReLU layer sigma_in was propagated from
    shortcut_mean: float = 0.0
    shortcut_std: float = 0.0
    gamma: np.ndarray | None = None  # effective normalization scale per unit (norm layers)
    beta: np.ndarray | None = None

    @property
    def units(self) -> int:
        return int(self.mean.size)


@dataclass(frozen=True)
class Margins:
    settings: Settings
    models: dict[str, UnitModel] = field(default_factory=dict)  # layer name -> unit model
    skipped: dict[str, str] = field(default_factory=dict)  # layer name -> why it has no unit model
    # Layers skipped because a weight rule (RL102, RL103) reports their weights: not propagated downstream.
    weight_defects: set[str] = field(default_factory=set)
    scales: dict[str, Scale] = field(default_factory=dict)  # tensor id -> estimate


# ---- shared predicates (the init rules use them too, so one cause gives one finding) ----------------
def is_constant_weight(stats: WeightStats, tolerance: float) -> bool:
    """All weights equal (zero included), or a std negligible next to their size and He's std."""
    if stats.nonfinite or not math.isfinite(stats.std):
        return False
    reference = max(abs(stats.mean), stats.he_std if math.isfinite(stats.he_std) else 0.0)
    return stats.min == stats.max or stats.std <= tolerance * reference


def layer_has_nonfinite(ctx: Context, layer: Layer) -> bool:
    stats = ctx.weight_stats(layer)
    if stats is not None and stats.nonfinite:
        return True
    bias = ctx.bias(layer)
    if bias is not None and not np.all(np.isfinite(bias)):
        return True
    return any(not np.all(np.isfinite(v)) for v in norm_parameters(ctx.graph, layer).values() if v is not None)


def constant_tolerance(ctx: Context) -> float:
    return float(ctx.config.options_for(CONSTANT_RULE).get("std_tolerance", 1e-6))


def _float_constant(graph: Graph, tensor: str) -> np.ndarray | None:
    value = graph.constant(tensor)
    if value is None or value.dtype.kind not in "fiu":
        return None
    return np.asarray(value, dtype=np.float64)


MOMENT_SLICE = 1 << 20  # elements of an in-memory constant turned into float64 at a time


def constant_moments(graph: Graph, tensor: str) -> tuple[float, float] | None:
    """(mean, RMS) of a numeric constant in float64, block by block: an initializer streamed in row blocks,
    a folded constant in slices. Read whole and squared in float64, the embedding table of the OPT-125M
    shape took 440 MB of relulint --no-probe's 666 MB peak (the OPT-1.3B one holds 103M values)."""
    initializer = graph.initializers.get(tensor)
    try:
        if initializer is not None:
            dtype = element_dtype(initializer.data_type)
            if dtype is None or dtype.kind not in "fiu":
                return None
            shape = tensor_shape(initializer)
            blocks = row_blocks(initializer, graph.loaded, shape[0] if shape else 1)
        else:
            value = graph.constant(tensor)
            if value is None or value.dtype.kind not in "fiu":
                return None
            flat = value.reshape(-1)
            blocks = (flat[start : start + MOMENT_SLICE] for start in range(0, flat.size, MOMENT_SLICE))
        total = squares = 0.0
        count = 0
        for block in blocks:
            values = np.asarray(block, dtype=np.float64).reshape(-1)
            total += float(values.sum())
            squares += float(np.dot(values, values))
            count += values.size
    except TensorUnavailable:
        return None
    return (total / count, math.sqrt(squares / count)) if count else None


# ---- Gaussian moments -------------------------------------------------------------------------------
# Chebyshev fit of erfc (Numerical Recipes' erfcc): relative error below 1.2e-7 everywhere, tails included,
# so the moments of far-off units stay accurate; numpy has no erfc and a Python loop costs a microsecond a unit.
_ERFC_COEFFICIENTS = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def erfc(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.zeros_like(z)
    for coefficient in reversed(_ERFC_COEFFICIENTS):
        poly = coefficient + t * poly
    with np.errstate(under="ignore", over="ignore"):
        tail = t * np.exp(-z * z + poly)
    return np.where(x >= 0, tail, 2.0 - tail)


def normal_pdf(t: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * np.square(t)) / math.sqrt(2.0 * math.pi)


def rectified_moments(mean: np.ndarray, std: np.ndarray, slope: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """E[f(X)] and E[f(X)^2] for X ~ N(mean, std^2) and f(x) = max(x, 0) + slope * min(x, 0)."""
    with np.errstate(over="ignore", invalid="ignore"):  # huge weights overflow to inf: a scale, not a crash
        return _rectified_moments(np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64), slope)


def _rectified_moments(m: np.ndarray, s: np.ndarray, slope: float) -> tuple[np.ndarray, np.ndarray]:
    positive_s = s > 0
    safe_s = np.where(positive_s, s, 1.0)
    t = m / safe_s
    # One erfc for both sides: the small tail is exact, its complement is 1 - tail.
    tail = 0.5 * erfc(np.abs(t) / math.sqrt(2.0))
    cdf = np.where(t < 0, tail, 1.0 - tail)  # Phi(t)
    cdf_neg = np.where(t < 0, 1.0 - tail, tail)  # Phi(-t)
    pdf = normal_pdf(t)
    square = m * m + safe_s * safe_s
    first = m * cdf + safe_s * pdf
    second = np.maximum(square * cdf + m * safe_s * pdf, 0.0)
    if slope:
        first = first - slope * (-m * cdf_neg + safe_s * pdf)  # E[max(-X, 0)]
        second = second + slope * slope * np.maximum(square * cdf_neg - m * safe_s * pdf, 0.0)
    # A unit with no spread outputs f(mean) exactly.
    exact = np.where(m > 0, m, slope * m)
    return np.where(positive_s, first, exact), np.where(positive_s, second, exact * exact)


def margins_of(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, mean / np.where(std > 0, std, 1.0), np.nan)


# ---- the analysis -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """The rule options the analysis depends on, read once per model."""

    input_scale: float = FALLBACK_SCALE
    constant_tolerance: float = 1e-6
    bias_k: float = 3.0
    norm_k: float = 3.0
    norm_scale_tolerance: float = 1e-3
    warning_fraction: float = 0.05

    @classmethod
    def from_context(cls, ctx: Context) -> Settings:
        bias, norm = ctx.config.options_for(BIAS_RULE), ctx.config.options_for(NORM_RULE)
        defaults = cls()
        return cls(
            input_scale=float(bias.get("input_scale", defaults.input_scale)),
            constant_tolerance=float(ctx.config.options_for(CONSTANT_RULE).get("std_tolerance", 1e-6)),
            bias_k=float(bias.get("k", defaults.bias_k)),
            norm_k=float(norm.get("k", defaults.norm_k)),
            norm_scale_tolerance=float(norm.get("scale_tolerance", defaults.norm_scale_tolerance)),
            warning_fraction=float(bias.get("warning_fraction", defaults.warning_fraction)),
        )

    def risk(self, model: UnitModel) -> tuple[float, float]:
        """(k, scale tolerance) of the rule that judges this unit model."""
        if model.judged_by == JUDGED_BY_NORM:
            return self.norm_k, self.norm_scale_tolerance
        return self.bias_k, 0.0


def margins(ctx: Context) -> Margins:
    """The model's unit models and propagated scales, computed once per run."""
    return ctx.cached("margins", compute_margins)


def compute_margins(ctx: Context) -> Margins:
    result = Margins(settings=Settings.from_context(ctx))
    _Propagation(ctx, result).run()
    for layer in ctx.layers:
        model = result.models.get(layer.name)
        if model is not None:
            _record_metrics(ctx, layer, model, result.settings)
    return result


def at_risk(model: UnitModel, k: float, scale_tolerance: float = 0.0) -> np.ndarray:
    """Units whose margin is below -k (NaN margins are not); for normalized units also those scaled to
    (almost) zero with a non-positive shift, which are never (or only negligibly) positive."""
    mask = model.margins < -k
    if model.judged_by == JUDGED_BY_NORM:
        mask |= (model.std <= scale_tolerance) & (model.mean <= 0)
    return mask


def _record_metrics(ctx: Context, layer: Layer, model: UnitModel, settings: Settings) -> None:
    count = int(np.count_nonzero(at_risk(model, *settings.risk(model))))
    finite = model.margins[np.isfinite(model.margins)]
    ctx.metric(
        layer,
        input_scale=model.input_scale,
        bias_margin_min=float(finite.min()) if finite.size else float("nan"),
        at_risk=count,
        at_risk_fraction=count / model.units if model.units else 0.0,
    )


class _Propagation:
    """One forward pass over the nodes (ONNX keeps them in topological order within each graph)."""

    def __init__(self, ctx: Context, result: Margins) -> None:
        self.ctx = ctx
        self.graph = ctx.graph
        self.result = result
        self.settings = result.settings
        self.by_activation = {layer.name: layer for layer in ctx.layers}
        self.by_linear = {layer.linear: layer for layer in ctx.layers if layer.linear}
        self.decomposed_norms = {layer.norm for layer in ctx.layers if layer.norm_op == DECOMPOSED_LAYERNORM}

    def run(self) -> None:
        scales = self.result.scales
        for tensor in self.graph.inputs:
            scales[tensor] = Scale(0.0, self.settings.input_scale, "graph input")
        for node in self.graph:
            if not node.outputs or not node.outputs[0] or node.id in self.by_linear:
                continue  # a layer's linear output is estimated on demand (its unit model usually suffices)
            if node.id in self.by_activation:
                estimate = self.layer_output(self.by_activation[node.id])
            elif node.op in NORM_OPS or node.id in self.decomposed_norms:
                estimate = _normalized_output(self.graph, node)
            else:
                estimate = self.generic_output(node)
            if estimate is None:
                continue
            for tensor in node.outputs if node.op == "Split" else node.outputs[:1]:
                if tensor:
                    scales[tensor] = estimate

    def scale_of(self, tensor: str) -> Scale:
        scales = self.result.scales
        if tensor in scales:
            return scales[tensor]
        producer = self.graph.producer(tensor)
        if producer is not None and producer.id in self.by_linear and producer.outputs[:1] == [tensor]:
            scales[tensor] = self.linear_output(self.by_linear[producer.id])
            return scales[tensor]
        if self.graph.is_constant(tensor):
            moments = constant_moments(self.graph, tensor)
            if moments is None:
                return unknown(f"constant '{tensor}' is not numeric")
            scales[tensor] = Scale(*moments, "constant")
            return scales[tensor]
        where = f"{producer.op} node '{producer.id}'" if producer else f"tensor '{tensor}'"
        return unknown(f"no scale estimate through {where}")

    # ---- linear ops and other nodes ----------------------------------------------------------------
    def input_scale(self, layer: Layer) -> tuple[float, str, bool, str | None]:
        """(sigma_in, where it came from, whether it is the fallback, upstream layer)."""
        tensor = _linear_input(self.graph, layer)
        if tensor is None:
            return float("nan"), "no linear op", True, None
        estimate = self.scale_of(tensor)
        if not estimate.known:
            return FALLBACK_SCALE, f"fallback {FALLBACK_SCALE:g}: {estimate.source}", True, None
        if estimate.rms < TINY_SCALE:
            return TINY_SCALE, f"{estimate.source}: about zero", False, estimate.layer
        return float(estimate.rms), estimate.source, False, estimate.layer

    def row_norms(self, layer: Layer) -> np.ndarray | None:
        stats = self.ctx.weight_stats(layer)
        if stats is None or stats.nonfinite:
            return None
        return np.asarray(stats.row_norms, dtype=np.float64) * abs(_gemm_alpha(self.graph, layer))

    def linear_output(self, layer: Layer) -> Scale:
        """RMS of a linear op's output: sqrt(mean_j(||w_j||^2 sigma_in^2 + b_j^2)), own bias only."""
        graph = self.graph
        rows = self.row_norms(layer)
        tensor = _linear_input(graph, layer)
        if rows is None or tensor is None:
            return unknown(f"the weights of '{layer.linear}' are unknown or not finite")
        estimate = self.scale_of(tensor)
        if not estimate.known:
            return estimate
        node = graph.nodes[layer.linear]
        bias = np.zeros(rows.size)
        if node.op in ("Conv", "ConvTranspose", "Gemm") and len(node.inputs) > 2 and node.inputs[2]:
            value = _float_constant(graph, node.inputs[2])
            if value is not None and value.size in (1, rows.size):
                bias = bias + value.reshape(-1) * (float(node.attr("beta", 1.0)) if node.op == "Gemm" else 1.0)
        rms = math.sqrt(float(np.mean(np.square(rows) * estimate.rms**2 + np.square(bias))))
        return Scale(float(bias.mean()), rms, estimate.source, estimate.layer)

    def generic_output(self, node: Node) -> Scale | None:
        graph = self.graph
        if node.domain not in ("", "ai.onnx"):
            return unknown(f"no scale estimate through {node.domain}.{node.op} node '{node.id}'")
        inputs = node.computed_inputs
        if graph.is_constant(node.outputs[0]):
            return None  # constants are read where they are used
        if node.op in SCALE_KEEPING_OPS and inputs:
            return self.scale_of(inputs[0])
        if node.op in ("Add", "Sum", "Sub") and inputs:
            return _sum_of([self.scale_of(t) for t in inputs], subtract_rest=node.op == "Sub")
        if node.op == "Mul" and len(inputs) == 2:
            constants = [t for t in inputs if graph.is_constant(t)]
            if len(constants) == 1:
                x = self.scale_of(next(t for t in inputs if t != constants[0]))
                c = self.scale_of(constants[0])
                if x.known and c.rms is not None:
                    return Scale(x.mean * c.mean, x.rms * c.rms, x.source, x.layer)
                return x
        if node.op == "Concat" and inputs:
            parts = [self.scale_of(t) for t in inputs]
            missing = next((p for p in parts if not p.known), None)
            if missing is not None:
                return missing
            rms = math.sqrt(float(np.mean([p.rms**2 for p in parts])))
            return Scale(float(np.mean([p.mean for p in parts])), rms, parts[0].source, parts[0].layer)
        return unknown(f"no scale estimate through {node.op} node '{node.id}'")

    # ---- one layer ---------------------------------------------------------------------------------
    def layer_output(self, layer: Layer) -> Scale:
        """Build the layer's unit model (when it has one) and estimate its activation's output."""
        result = self.result
        built = self.unit_model(layer)
        slope = _negative_slope(self.graph, layer)
        if built is None and layer.name in result.weight_defects:
            # A layer a weight rule reports is not propagated: its consequences downstream are the same cause.
            return unknown(f"'{layer.name}' is not modelled: {result.skipped[layer.name]}")
        if built is not None:
            model, mean_p, std_p = built
            result.models[layer.name] = model
            first, second = rectified_moments(mean_p, std_p, slope)
            mean, rms = float(np.mean(first)), math.sqrt(float(np.mean(second)))
        else:
            pre = self.scale_of(layer.pre_activation)
            if not pre.known:
                return unknown(f"no scale estimate for the input of '{layer.name}' ({pre.source})")
            first, second = rectified_moments(np.array([pre.mean]), np.array([math.sqrt(pre.variance)]), slope)
            mean, rms = float(first[0]), math.sqrt(float(second[0]))
        ceiling = _clip_ceiling(self.graph, layer)
        if ceiling is not None:
            mean, rms = min(mean, ceiling), min(rms, ceiling)
        return Scale(mean, rms, f"output of '{layer.name}'", layer.name)

    def unit_model(self, layer: Layer) -> tuple[UnitModel, np.ndarray, np.ndarray] | None:
        """The unit model, plus the per-unit (mean, std) used to propagate the layer's output scale.

        The margin follows the documented definition ``b / (||w|| * sigma_in)``. The propagation is more
        careful: a rectified input has a mean ``mu_in > 0``, so unit j's pre-activation is centred on
        ``b_j + mu_in * sum(w_j)`` and spreads ``||w_j|| * sd_in``; on He-initialized MLPs this tracks
        onnxruntime's measured RMS within a few percent, where the RMS-only model drifts low layer by layer.
        """
        reason = self.skip_reason(layer)
        if reason is not None:
            self.result.skipped[layer.name] = reason
            return None
        graph = self.graph
        sigma, source, fallback, upstream = self.input_scale(layer)
        path = _path_to(graph, layer.pre_activation, layer.norm or layer.linear)
        if layer.norm is not None:
            built = _normalized_units(graph, layer, path)
            if built is None:
                self.result.skipped[layer.name] = f"the parameters of '{layer.norm}' do not map to the layer's units"
                return None
            mean, std, gamma, beta = built
            mean_p, std_p = mean, std
            judged_by = JUDGED_BY_NORM
        else:
            rows, bias = self.row_norms(layer), self.ctx.bias(layer)
            if rows is None or bias is None or rows.size != bias.size:
                self.result.skipped[layer.name] = "the bias is unreadable or not one number per unit"
                return None
            mean, std, gamma, beta = bias.astype(np.float64), rows * sigma, None, None
            mean_p, std_p = self.centred_units(layer, mean, rows)
            judged_by = JUDGED_BY_BIAS
        shortcut_mean, shortcut_var = 0.0, 0.0
        for tensor, factor in path.shortcuts if path else ():
            estimate = self.scale_of(tensor)
            if estimate.known:
                shortcut_mean += factor * estimate.mean
                shortcut_var += factor * factor * estimate.variance
        if shortcut_mean or shortcut_var:
            mean, mean_p = mean + shortcut_mean, mean_p + shortcut_mean
            std, std_p = np.sqrt(np.square(std) + shortcut_var), np.sqrt(np.square(std_p) + shortcut_var)
        model = UnitModel(
            layer=layer.name,
            judged_by=judged_by,
            mean=mean,
            std=std,
            margins=margins_of(mean, std),
            input_scale=sigma,
            input_scale_source=source,
            input_scale_fallback=fallback,
            upstream=upstream,
            shortcut_mean=shortcut_mean,
            shortcut_std=math.sqrt(shortcut_var),
            gamma=gamma,
            beta=beta,
        )
        return model, mean_p, std_p

    def centred_units(self, layer: Layer, bias: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) per unit of ``w_j . x + b_j`` for an input of mean mu_in and RMS sigma_in."""
        tensor = _linear_input(self.graph, layer)
        estimate = self.scale_of(tensor) if tensor else unknown("no linear op")
        if not estimate.known:
            return bias, rows * FALLBACK_SCALE
        if not estimate.mean:
            return bias, rows * max(estimate.rms, TINY_SCALE)
        stats = self.ctx.weight_stats(layer)
        if stats is None or stats.row_sums.size != bias.size:
            return bias, rows * max(estimate.rms, TINY_SCALE)
        row_sums = stats.row_sums * _gemm_alpha(self.graph, layer)
        spread = max(math.sqrt(estimate.variance), TINY_SCALE)
        return bias + estimate.mean * row_sums, rows * spread

    def skip_reason(self, layer: Layer) -> str | None:
        if layer.linear is None and layer.norm is None:
            return "no linear op or normalization feeds the activation"
        if layer_has_nonfinite(self.ctx, layer):
            self.result.weight_defects.add(layer.name)
            return "non-finite weights, biases or normalization parameters (RL103)"
        stats = self.ctx.weight_stats(layer) if layer.linear else None
        if stats is not None and is_constant_weight(stats, self.settings.constant_tolerance):
            self.result.weight_defects.add(layer.name)
            return "all weights are equal (RL102)"
        if layer.norm is None and stats is None:
            return "the weights are not a known constant"
        return None


def _linear_input(graph: Graph, layer: Layer) -> str | None:
    node = graph.nodes[layer.linear] if layer.linear else None
    if node is None or not node.inputs:
        return None
    return node.inputs[1] if layer.weight_layout == "matmul_left" else node.inputs[0]


def _gemm_alpha(graph: Graph, layer: Layer) -> float:
    """Gemm multiplies its product by alpha: it scales every weight."""
    return float(graph.nodes[layer.linear].attr("alpha", 1.0)) if layer.linear_op == "Gemm" else 1.0


def _normalized_output(graph: Graph, node: Node) -> Scale:
    """A normalization outputs N(beta, gamma^2) per channel: RMS sqrt(mean(gamma^2 + beta^2))."""
    source = f"normalized by '{node.id}'"
    if node.op not in NORM_OPS:
        return Scale(0.0, 1.0, source)  # a decomposed LayerNorm's Div: gamma and beta follow as Mul/Add
    gamma = _float_constant(graph, node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
    beta = _float_constant(graph, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    gamma = np.ones(1) if gamma is None or gamma.size == 0 else gamma.reshape(-1)
    beta = np.zeros(1) if beta is None or beta.size == 0 else beta.reshape(-1)
    if not (np.all(np.isfinite(gamma)) and np.all(np.isfinite(beta))):
        return unknown(f"'{node.id}' has non-finite parameters")
    rms = math.sqrt(float(np.mean(np.square(gamma)) + np.mean(np.square(beta))))
    return Scale(float(beta.mean()), rms, source)


def _sum_of(parts: list[Scale], subtract_rest: bool = False) -> Scale:
    """Independent terms: means add, variances add."""
    missing = next((p for p in parts if p.rms is None or p.mean is None), None)
    if missing is not None:
        return missing
    signs = [1.0] + [-1.0 if subtract_rest else 1.0] * (len(parts) - 1)
    mean = sum(sign * p.mean for sign, p in zip(signs, parts))
    variance = sum(p.variance for p in parts)
    computed = [p for p in parts if p.source != "constant"] or parts
    return Scale(mean, math.sqrt(variance + mean * mean), computed[0].source, computed[0].layer)


@dataclass
class _Path:
    """Constant affine steps and residual joins between a layer's base tensor and its activation."""

    scale: np.ndarray | float = 1.0
    shift: np.ndarray | float = 0.0
    shortcuts: list[tuple[str, float]] = field(default_factory=list)  # (tensor, scalar factor)


def _path_to(graph: Graph, tensor: str, target: str | None) -> _Path | None:
    """Walk back from the activation's input to ``target`` (the norm or linear node); None when lost."""
    path = _Path()
    for _ in range(MAX_WALK):
        node = graph.producer(tensor)
        if node is None or target is None:
            return None
        if node.id == target:
            return path
        computed = [t for t in node.computed_inputs if not graph.is_constant(t)]
        constants = [t for t in node.computed_inputs if graph.is_constant(t)]
        if node.op in PASS_THROUGH_OPS and node.computed_inputs:
            tensor = node.inputs[0]
        elif node.op in ("Add", "Sub", "Mul") and len(computed) == 1 and len(constants) == 1:
            value = _float_constant(graph, constants[0])
            if value is None:
                return None
            value = value.reshape(-1)
            if node.op == "Mul":
                path.scale = path.scale * value
            elif node.op == "Add" or node.inputs[0] == computed[0]:
                path.shift = path.shift + path.scale * value * (1.0 if node.op == "Add" else -1.0)
            else:
                return None  # c - x flips the sign
            tensor = computed[0]
        elif node.op in ("Add", "Sum") and len(computed) >= 2:
            main = next((t for t in computed if _reaches(graph, t, target)), None)
            if main is None:
                return None
            factor = float(np.mean(np.abs(path.scale)))
            path.shortcuts.extend((t, factor) for t in computed if t != main)
            tensor = main
        else:
            return None
    return None


def _reaches(graph: Graph, tensor: str, target: str) -> bool:
    for _ in range(MAX_WALK):
        node = graph.producer(tensor)
        if node is None:
            return False
        if node.id == target:
            return True
        computed = [t for t in node.computed_inputs if not graph.is_constant(t)]
        if len(computed) != 1 or node.op in LINEAR_OPS or node.op in NORM_OPS:
            return False
        tensor = computed[0]
    return False


def _per_unit(value: np.ndarray | float, units: int, groups: int | None = None) -> np.ndarray | None:
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    if flat.size == units:
        return flat
    if flat.size == 1:
        return np.full(units, flat[0])
    if groups and flat.size == groups and units % groups == 0:
        return np.repeat(flat, units // groups)
    return None


def _normalized_units(
    graph: Graph, layer: Layer, path: _Path | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(mean, std, effective gamma, effective beta) per unit of a normalized layer."""
    node = graph.nodes[layer.norm]
    params = norm_parameters(graph, layer)
    gamma = params.get("gamma")
    beta = params.get("beta")
    size = next((v.size for v in (gamma, beta) if v is not None and v.size > 1), None)
    units = layer.units or size
    if units is None:
        return None
    groups = int(node.attr("num_groups", 0) or 0) or None
    gamma = _per_unit(1.0 if gamma is None else gamma, units, groups)
    beta = _per_unit(0.0 if beta is None else beta, units, groups)
    path = path or _Path()
    scale, shift = _per_unit(path.scale, units), _per_unit(path.shift, units)
    if gamma is None or beta is None or scale is None or shift is None:
        return None
    effective_gamma = scale * gamma
    effective_beta = scale * beta + shift
    return effective_beta, np.abs(effective_gamma), effective_gamma, effective_beta


def _negative_slope(graph: Graph, layer: Layer) -> float:
    node = graph.nodes[layer.name]
    if node.op == "LeakyRelu":
        return float(node.attr("alpha", LEAKY_DEFAULT_SLOPE["LeakyRelu"]))
    if node.op == "PRelu" and len(node.inputs) > 1:
        slope = _float_constant(graph, node.inputs[1])
        return float(np.mean(slope)) if slope is not None and slope.size else LEAKY_DEFAULT_SLOPE["PRelu"]
    return 0.0


def _clip_ceiling(graph: Graph, layer: Layer) -> float | None:
    node = graph.nodes[layer.name]
    if node.op != "Clip":
        return None
    if len(node.inputs) > 2 and node.inputs[2]:
        value = _float_constant(graph, node.inputs[2])
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None
    ceiling = node.attr("max")
    return float(ceiling) if ceiling is not None else None


# ---- reporting helpers shared by RL201 and RL202 -------------------------------------------------
@dataclass(frozen=True)
class RiskSummary:
    count: int
    total: int
    worst: tuple[int, ...]  # unit indices, lowest margin first
    margin_min: float
    margin_median: float

    @property
    def fraction(self) -> float:
        return self.count / self.total if self.total else 0.0


def summarize_risk(model: UnitModel, mask: np.ndarray, worst: int) -> RiskSummary:
    indices = np.flatnonzero(mask)
    order = indices[np.argsort(model.margins[indices], kind="stable")]  # -inf (gamma = 0) first
    finite = model.margins[np.isfinite(model.margins)]
    return RiskSummary(
        count=int(indices.size),
        total=model.units,
        worst=tuple(int(i) for i in order[:worst]),
        margin_min=float(np.min(model.margins[indices])) if indices.size else float("nan"),
        margin_median=float(np.median(finite)) if finite.size else float("nan"),
    )


def active_rate(margin: float) -> float:
    """Fraction of Gaussian inputs on which a unit with this margin is positive: Phi(margin)."""
    if math.isnan(margin):
        return float("nan")
    return 0.5 * math.erfc(-margin / math.sqrt(2.0))


def percent(fraction: float) -> str:
    value = 100.0 * fraction
    return f"{value:.0f}%" if value >= 10 or value == 0 else f"{value:.2g}%"


def risk_severity(fraction: float, warning_fraction: float, error_fraction: float) -> Severity:
    if fraction > error_fraction:
        return Severity.ERROR
    if fraction > warning_fraction:
        return Severity.WARNING
    return Severity.NOTE


def upstream_hint(ctx: Context, model: UnitModel) -> str:
    """When sigma_in came from a layer that is itself mostly at risk, say so: fixing it comes first."""
    analysis = margins(ctx)
    upstream = analysis.models.get(model.upstream or "")
    if upstream is None:
        return ""
    fraction = float(np.count_nonzero(at_risk(upstream, *analysis.settings.risk(upstream)))) / max(upstream.units, 1)
    if fraction <= analysis.settings.warning_fraction:
        return ""
    return (
        f"; its input comes from '{upstream.layer}', where {percent(fraction)} of units are at risk, "
        "which shrinks σ_in: fix that layer first"
    )


def format_margin(value: float) -> str:
    if math.isinf(value):
        return "-inf" if value < 0 else "inf"
    return f"{value:.3g}"
