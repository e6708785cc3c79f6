"""One model through the pipeline: load -> graph -> analyses -> rules -> ``ModelResult``."""

from __future__ import annotations

import fnmatch
import importlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from relulint.config import Config
from relulint.context import Context
from relulint.errors import ModelError
from relulint.external import expected_nbytes
from relulint.findings import Finding, ModelResult, Note
from relulint.graph import Graph, build_graph, collector_paused, count_parameters
from relulint.loader import LoadedModel, load_model, run_checker
from relulint.rules import Rule, all_rules, matches
from relulint.units import Layer, find_layers
from relulint.watchdog import AnalysisTimeout, watchdog

# Analyses that rules can ask for with ``needs``: name -> "module:function(ctx) -> None", run in this
# order after the static rules. The probe is not among them: it is started before the static rules and
# collected after them (its child process works meanwhile), so it is done before these run. A ModelError
# raised by an analysis makes the model's result an error (exit 2); other exceptions a note. Each stores
# its result in ``ctx.analyses`` (``relulint.analyses.Analyses``) or explains in a note why it could not.
ANALYSES: dict[str, str] = {
    "bounds": "relulint.bounds.analysis:run_bounds_analysis",
    "compare": "relulint.compare:run_compare_analysis",
}


def debug() -> bool:
    """RELULINT_DEBUG=1 lets internal errors raise (the tests set it) instead of becoming notes."""
    return os.environ.get("RELULINT_DEBUG") == "1"


def selected_rules(config: Config) -> list[Rule]:
    return [r for r in all_rules() if matches(r.id, config.select) and not matches(r.id, config.ignore)]


def analyse(path: str, config: Config) -> ModelResult:
    """Analyse one model; a model that cannot be read, or whose analysis runs out of ``--timeout``, gives a
    result with ``error`` set."""
    try:
        with watchdog(config.timeout):
            return _analyse(path, config)
    except AnalysisTimeout:
        return ModelResult(
            path=str(path),
            error=f"loading and analysing it took more than {config.timeout:g} s of processor time (--timeout); "
            "it was stopped",
        )


def _analyse(path: str, config: Config) -> ModelResult:
    try:
        loaded = load_model(path, config.max_model_size, check=False, digest=config.digest)  # checked later
    except ModelError as exc:
        return ModelResult(path=str(path), error=exc.problem)
    except Exception as exc:
        if debug():
            raise
        return ModelResult(path=str(path), error=f"internal error while loading: {_short(exc)}", internal=True)
    # The graph model allocates many small objects that live as long as the analysis: the cyclic
    # garbage collector would rescan them again and again (measured: 12-18 µs/node without it, 31-37
    # with it, at 100,000 nodes). Nothing here builds reference cycles worth collecting early.
    with collector_paused():
        try:
            return _analyse_loaded(loaded, config)
        except ModelError as exc:  # e.g. --compare names a checkpoint that does not match this model
            return ModelResult(path=str(path), sha256=_sha256(loaded, config), error=exc.problem)
        except Exception as exc:
            if debug():
                raise
            return ModelResult(
                path=str(path), sha256=_sha256(loaded, config), error=f"internal error: {_short(exc)}", internal=True
            )


def _sha256(loaded: LoadedModel, config: Config) -> str | None:
    return loaded.sha256 if config.digest else None


def _analyse_loaded(loaded: LoadedModel, config: Config) -> ModelResult:
    graph = build_graph(loaded)
    layers = find_layers(graph)
    ctx = Context(loaded=loaded, graph=graph, layers=layers, config=config)
    ctx.notes.extend(loaded.notes)
    ctx.notes.extend(graph.notes)
    ctx.notes.extend(_training_mode_notes(layers))
    rules = selected_rules(config)
    wanted = {need for rule in rules for need in rule.meta.needs}
    probing = _start_probe(ctx) if "probe" in wanted and config.probe else None
    # The checker (25 ms on the ResNet-50 bench model) runs once the probe's job is out; its note
    # goes where the loader would have put it, after the loader's own notes.
    ctx.notes[len(loaded.notes) : len(loaded.notes)] = run_checker(loaded)
    findings: list[Finding] = []
    try:
        # The static rules and weight statistics run while the probe's child creates its session. The
        # statistics come first (the rules read them; the reports show them even when no rule asked).
        _weight_stats(ctx, threads=1 if probing is not None else STATS_THREADS)
        _static_analyses(ctx)
        for rule in rules:
            if not rule.meta.needs:
                findings.extend(_run_rule(ctx, rule))
    except BaseException:
        if probing is not None:
            probing.cancel()
        raise
    if probing is not None:
        _guarded(ctx, "probe", probing.finish)
    _run_analyses(ctx, wanted)
    for rule in rules:
        if not rule.meta.needs or not all(ctx.analyses.ran(need) for need in rule.meta.needs):
            continue  # static (done above), or the analysis did not run: its note says why
        findings.extend(_run_rule(ctx, rule))
    findings = _sorted(_apply_config(_yielded(findings, rules), config), graph)
    info = loaded.info()
    info["parameters"] = count_parameters(graph)
    info["nodes"] = len(graph.nodes)
    result = ModelResult(
        path=loaded.path,
        sha256=_sha256(loaded, config),
        info=info,
        layers=ctx.layer_records(),
        findings=findings,
        notes=ctx.notes,
        analyses=ctx.analyses,
    )
    return result


def _training_mode_notes(layers: list[Layer]) -> list[Note]:
    training = sorted({layer.norm for layer in layers if layer.norm_training_mode and layer.norm})
    if not training:
        return []
    return [
        Note(
            "info",
            f"{len(training)} BatchNormalization node(s) were exported in training mode (e.g. '{training[0]}'): they "
            "normalize with each batch's own statistics, so the probe's counts depend on its batch and the running "
            "statistics the static rules read are not what the model computes; export in eval mode for inference",
            node=training[0],
        )
    ]


# numpy releases the GIL while it reduces a large array: the statistics of several layers are computed
# on as many threads (measured on the 1 GB bench model: 0.60 s on one thread, 0.32 s on two). Not while
# the probe's child creates its session: it needs the other core then.
STATS_THREADS = min(2, os.cpu_count() or 1)
THREADED_STATS_ABOVE = 32 * 1024**2  # bytes of weights; below, the threads cost more than they save


def _weight_stats(ctx: Context, threads: int) -> None:
    ctx.batch_weight_stats(ctx.layers)  # small weights many at a time; the rest one by one
    weights = sum(expected_nbytes(tensor) or 0 for tensor in ctx.graph.initializers.values())
    if threads > 1 and len(ctx.layers) > 1 and weights > THREADED_STATS_ABOVE:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(ctx.weight_stats, ctx.layers))
    else:
        for layer in ctx.layers:
            ctx.weight_stats(layer)


def _static_analyses(ctx: Context) -> None:
    """The margins and the chains of consecutive layers, for every model whatever rules are selected: their
    per-layer metrics are part of the JSON contract, which must not change with ``--select``. Each is cached
    on the context, so the rules that read them find them computed."""
    from relulint.chains import links
    from relulint.margins import margins

    _guarded(ctx, "margins", margins, ctx)
    _guarded(ctx, "chains", links, ctx)


def _start_probe(ctx: Context) -> Any:
    """Send the probe's job to its child process; the returned handle's ``finish()`` collects it."""
    from relulint.probe import start_probe_analysis

    return _guarded(ctx, "probe", start_probe_analysis, ctx)


def _run_analyses(ctx: Context, wanted: set[str]) -> None:
    for name, target in ANALYSES.items():  # in definition order: the comparison reuses the probe and bounds
        if name not in wanted:
            continue
        module_name, function_name = target.split(":")
        run: Callable[[Context], None] = getattr(importlib.import_module(module_name), function_name)
        _guarded(ctx, name, run, ctx)


def _guarded(ctx: Context, name: str, work: Callable[..., Any], *arguments: Any) -> Any:
    """Run one analysis step: a ModelError propagates (exit 2); another exception becomes a note."""
    try:
        return work(*arguments)
    except ModelError:
        raise
    except Exception as exc:
        if debug():
            raise
        ctx.notes.append(Note("skipped", f"the {name} analysis failed ({_short(exc)}); its rules did not run"))
        return None


def _run_rule(ctx: Context, rule: Rule) -> Iterable[Finding]:
    try:
        return list(rule.check(ctx, ctx.config.options_for(rule.id)))
    except Exception as exc:
        if debug():
            raise
        ctx.notes.append(Note("skipped", f"rule {rule.id} failed on this model ({_short(exc)}); it reported nothing"))
        return []


def _apply_config(findings: list[Finding], config: Config) -> list[Finding]:
    kept = []
    for finding in findings:
        node = finding.node or ""
        if any(
            fnmatch.fnmatchcase(node, glob) and matches(finding.rule, ids)
            for glob, ids in config.per_node_ignores.items()
        ):
            continue
        if finding.rule in config.severities:
            finding = replace(finding, severity=config.severities[finding.rule])
        kept.append(finding)
    return kept


def _yielded(findings: list[Finding], rules: list[Rule]) -> list[Finding]:
    """Without the findings of a companion rule on nodes where a rule it yields to reported (RuleMeta.yields_to)."""
    yields = {rule.id: rule.meta.yields_to for rule in rules if rule.meta.yields_to}
    if not yields:
        return findings
    reported = {(finding.rule, finding.node) for finding in findings}
    return [f for f in findings if not any((rule, f.node) in reported for rule in yields.get(f.rule, ()))]


def _sorted(findings: list[Finding], graph: Graph) -> list[Finding]:
    order = {node_id: index for index, node_id in enumerate(graph.nodes)}
    return sorted(findings, key=lambda f: (order.get(f.node or "", -1), f.rule))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"
