"""A finished probe run on the context: its ``ProbeResult``, the per-layer metrics, and the notes saying
where sampling stopped, how synthetic inputs were drawn and which layers gave no value.

``relulint.probe.analysis`` prepares and runs the probe; what the child sent back is turned into these here.
"""

from __future__ import annotations

from relulint.config import Config
from relulint.context import Context
from relulint.findings import Note
from relulint.probe.inputs import (
    AUTO_MAX_SAMPLES,
    AUTO_STABLE_BATCHES,
    AUTO_TARGET_RATE,
    STRUCTURED_KINDS,
    STRUCTURED_NAMES,
    InputSpec,
    parse_distribution,
)
from relulint.probe.instrument import Instrumentation
from relulint.probe.protocol import Outcome
from relulint.probe.result import InputMeasure, LayerMeasure, ProbeResult
from relulint.probe.specs import first_linear

STOP_REASONS = {
    "settled": "the dead units had not changed for {stable} batches and their firing-rate bound was under {rate}",
    "time": "its time budget ended (--probe-timeout)",
    "auto-limit": "it reached {limit:,} samples",
}


def stopping_note(ctx: Context, outcome: Outcome, auto: bool) -> None:
    """Where sampling stopped, when that was not simply the cap or the end of the data."""
    if outcome.stopped not in STOP_REASONS:
        return
    why = STOP_REASONS[outcome.stopped].format(
        stable=AUTO_STABLE_BATCHES, rate=f"{AUTO_TARGET_RATE:.0%}", limit=AUTO_MAX_SAMPLES
    )
    what = "--samples auto" if auto else "the probe"
    used = f"{outcome.samples:,} samples"
    if ctx.config.data and outcome.available:
        used = f"{outcome.samples:,} of the {outcome.available:,} samples of --data (in file order)"
    ctx.notes.append(Note("info", f"{what} stopped after {used}: {why}"))


def probe_result(
    ctx: Context, instrumentation: Instrumentation, outcome: Outcome, specs: list[InputSpec]
) -> ProbeResult:
    config = ctx.config
    synthetic = config.data is None
    result = ProbeResult(
        inputs="synthetic" if synthetic else "data",
        samples=outcome.samples,
        batch=outcome.batch,
        distribution=describe_synthetic(config, specs) if synthetic else None,
        data=config.data,
        fed_inputs=tuple(ctx.graph.inputs),
        skipped=dict(instrumentation.skipped),
        stopped=outcome.stopped,
        available=outcome.available,
        seconds=outcome.session_seconds + outcome.run_seconds,
        peak_rss=outcome.peak_rss,
    )
    by_name = {layer.name: layer for layer in ctx.layers}
    for tap in instrumentation.taps:
        sums = outcome.totals[tap.layer]
        if sums.low_rank is not None:
            shape = "x".join(map(str, sums.low_rank)) or "a scalar"
            result.skipped[tap.layer] = f"its output has shape {shape} at run time: no axis of units"
            continue
        zero_below = not by_name[tap.layer].keeps_gradient_below_zero
        result.layers[tap.layer] = LayerMeasure.from_totals(tap.layer, sums, zero_below)
    for name, totals in outcome.inputs.items():
        reached = first_linear(ctx.graph, name)  # the child measured only inputs that reach one (_with_data_axes)
        measure = InputMeasure.from_totals(name, totals, reached[0].id if reached else "")
        if measure is not None:
            result.data_inputs[name] = measure
    return result


def set_metrics(ctx: Context, result: ProbeResult) -> None:
    for layer in ctx.layers:
        measure = result.layers.get(layer.name)
        if measure is None or not measure.ran:
            continue
        ctx.metric(
            layer,
            dead=measure.dead,
            dead_fraction=measure.dead / measure.units,
            rarely_active=measure.rarely_active,
            rarely_active_fraction=measure.rarely_active / measure.units,
            never_positive=measure.never_positive,
            sparsity=measure.sparsity,
            probe_samples=measure.samples,
            probe_evidence=result.inputs,
            firing_rate_bound=measure.firing_rate_bound,
        )


def note_unmeasured_layers(ctx: Context, result: ProbeResult, instrumentation: Instrumentation) -> None:
    """Instrumented layers the run gave no value of: a rank found too low at run time, or an If branch that
    no sample took (its units are neither dead nor alive on these inputs)."""
    planned = dict(instrumentation.skipped)  # left out before the run: note_skipped_layers tells those
    low_rank = [(name, why) for name, why in result.skipped.items() if name not in planned]
    untaken = [name for name, measure in result.layers.items() if not measure.ran]
    parts = [f"{name} ({why})" for name, why in low_rank[:5]]
    parts += [f"{name} (no sample ran the If branch it sits in)" for name in untaken[: max(5 - len(parts), 0)]]
    count = len(low_rank) + len(untaken)
    if count:
        more = f"; and {count - len(parts)} more" if count > len(parts) else ""
        ctx.notes.append(Note("skipped", f"the probe measured no value of {count} layer(s): {'; '.join(parts)}{more}"))


def note_skipped_layers(ctx: Context, instrumentation: Instrumentation) -> None:
    if not instrumentation.skipped:
        return
    shown = "; ".join(f"{name} ({why})" for name, why in instrumentation.skipped[:5])
    more = len(instrumentation.skipped) - 5
    ctx.notes.append(
        Note(
            "skipped",
            f"the probe does not measure {len(instrumentation.skipped)} layer(s): {shown}"
            + (f"; and {more} more" if more > 0 else ""),
        )
    )


def describe_synthetic(config: Config, specs: list[InputSpec]) -> str:
    """How synthetic inputs were drawn, for messages: the distribution, the inputs drawn from their domain,
    and how integer inputs were filled (token ids below their embedding table's rows, masks all ones)."""
    dist = parse_distribution(config.input_dist)
    text = dist.describe()
    if config.input_ranges:
        how = STRUCTURED_NAMES[dist.kind] if dist.kind in STRUCTURED_KINDS else "uniform"
        domains = ", ".join(
            f"{name} {how} over {'/'.join(f'[{lo:g}, {hi:g}]' for lo, hi in pairs)}"
            for name, pairs in config.input_ranges.items()
        )
        text = f"{domains}; any other float input {text}"
    integers = [_integer_fill(spec) for spec in specs if not spec.dtype.startswith(("float", "bfloat"))]
    if not integers:
        return text
    if len(integers) == len(specs):
        return ", ".join(integers)
    return ", ".join(integers) + ("; " if config.input_ranges else "; float inputs ") + text


def _integer_fill(spec: InputSpec) -> str:
    if spec.constant is not None:
        return f"{spec.name} all {spec.constant}"
    if spec.dtype == "bool":
        return f"{spec.name} random booleans"
    return f"{spec.name} uniform integers below {spec.int_high:,}"
