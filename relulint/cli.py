"""The command line: parse options, build the configuration, analyse, render. Nothing else."""

from __future__ import annotations

import os
import sys
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from relulint import INFORMATION_URI, __version__
from relulint.config import Config, config_from_table, find_config_file, load_config_file, unknown_rule
from relulint.discovery import Search, expand_paths
from relulint.engine import analyse, debug, selected_rules
from relulint.errors import UsageError
from relulint.findings import ModelResult, Note
from relulint.outputs import RunInputs, append_step_summary, check_destination, repository_root
from relulint.preprocess import PRESETS, parse_command_line
from relulint.report import FORMATS, SHOW_SHA256, FormatUnavailable, Run, format_for_path, render, write_atomically
from relulint.report.escape import clean
from relulint.report.github import step_summary
from relulint.report.sarif import relative_path
from relulint.rules import all_rules, rule_by_id


def _split(values: tuple[str, ...]) -> list[str]:
    return [part for value in values for part in value.replace(",", " ").split()]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _cli_table(options: dict[str, Any]) -> dict[str, Any]:
    """Command-line options that were given, as a table shaped like the configuration file."""
    table: dict[str, Any] = {}
    if options["select"]:
        table["select"] = _split(options["select"])
    if options["ignore"]:
        table["ignore"] = _split(options["ignore"])
    for name in ("exclude", "extend_exclude"):
        if options[name]:
            table[name.replace("_", "-")] = [part for value in options[name] for part in value.split(",") if part]
    if options["input_shape"]:
        shapes = {}
        for item in options["input_shape"]:
            name, sep, shape = item.rpartition("=")
            if not sep or not name:
                raise UsageError(f"--input-shape expects NAME=1x3x224x224, got '{item}'")
            shapes[name] = shape
        table["input-shape"] = shapes
    if options["input_range"]:
        ranges = {}
        for item in options["input_range"]:
            name, sep, spec = item.rpartition("=")
            if not sep or not name:
                raise UsageError(
                    f"--input-range expects NAME=LO,HI (or NAME=LO,HI/LO,HI/... per channel), got '{item}'"
                )
            ranges[name] = spec
        table["input-range"] = ranges
    if options["preprocess"]:
        table["preprocess"] = parse_command_line(options["preprocess"])
    simple = {
        "fail_on": "fail-on",
        "exit_zero": "exit-zero",
        "probe": "probe",
        "jobs": "jobs",
        "max_model_size": "max-model-size",
        "batch": "batch",
        "samples": "samples",
        "input_dist": "input-dist",
        "data": "data",
        "probe_timeout": "probe-timeout",
        "timeout": "timeout",
        "probe_memory": "probe-memory",
        "probe_failure_status": "probe-failure-status",
        "seed": "seed",
        "sarif_root": "sarif-root",
        "compare": "compare",
        "respect_gitignore": "respect-gitignore",
        "output_format": "output-format",
    }
    for name, key in simple.items():
        if options[name] is not None:
            table[key] = options[name]
    return table


def build_config(options: dict[str, Any]) -> Config:
    if options["config"]:
        base = load_config_file(Path(options["config"]))
    else:
        found = find_config_file(Path.cwd())
        base = load_config_file(found) if found else Config()
    try:
        return config_from_table(_cli_table(options), base, command_line=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def plan_outputs(formats: tuple[str, ...], outputs: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(format, destination) pairs; destination None is stdout.

    Without -o, the one --format goes to stdout. With -o, each file's format comes from its
    extension (.txt .json .sarif .html); --format names the format of ``-o -`` (stdout) or,
    when there is a single -o file, of that file.
    """
    if len(formats) > 1:
        raise UsageError("give one --format; with several -o files each file's format follows its extension")
    if not outputs:
        return [(formats[0] if formats else "text", None)]
    to_stdout = "-" in outputs
    if formats and not to_stdout and len(outputs) > 1:
        raise UsageError("with several -o files, each file's format follows its extension (.txt .json .sarif .html)")
    plan: list[tuple[str, str | None]] = []
    for destination in outputs:
        if destination == "-":
            plan.append((formats[0] if formats else "text", None))
            continue
        fmt = formats[0] if formats and not to_stdout else format_for_path(destination)
        if fmt is None:
            raise UsageError(f"cannot tell the format of '{destination}' from its name; give --format for it")
        plan.append((fmt, destination))
    return plan


def run_inputs(models: list[str], config: Config) -> RunInputs:
    """Every file this run reads, which no report may overwrite."""
    data = [config.data] if config.data else []
    return RunInputs(
        models=tuple(models + ([config.compare] if config.compare else [])),
        files=tuple(path for path in [*data, config.source] if path and not os.path.isdir(path)),
        folders=tuple(path for path in data if os.path.isdir(path)),
    )


def run_models(models: list[str], config: Config) -> list[ModelResult]:
    if config.jobs > 1 and len(models) > 1:
        with ProcessPoolExecutor(max_workers=min(config.jobs, len(models))) as pool:
            futures = [pool.submit(analyse, model, config) for model in models]  # results keep the input order
            return [_result_of(future, model) for future, model in zip(futures, models)]
    return [analyse(model, config) for model in models]


def _result_of(future: Future[ModelResult], model: str) -> ModelResult:
    try:
        return future.result()
    except BrokenProcessPool:  # a worker died (killed, out of memory): only its models are lost
        return ModelResult(path=model, error="the worker process analysing it died (killed or out of memory)")


INTERNAL_ERROR_STATUS = 3
BUG_REPORT = f"this is a bug in relulint {__version__}: please report it at {INFORMATION_URI}/issues"


def unfinished_probes(result: ModelResult) -> list[Note]:
    return [note for note in result.notes if note.unfinished]


def exit_status(results: list[ModelResult], config: Config) -> int:
    """3 an internal error, 2 a model that could not be analysed, else the worst of the findings'
    status (1 at or above --fail-on, 0 with --exit-zero) and --probe-failure-status for a probe that
    started but did not finish."""
    if any(result.internal for result in results):
        return INTERNAL_ERROR_STATUS
    if any(result.error is not None for result in results):
        return 2
    failing = not config.exit_zero and any(
        f.severity >= config.fail_on and not f.model_wide_note for result in results for f in result.findings
    )
    unfinished = any(unfinished_probes(result) for result in results)
    return max(1 if failing else 0, config.probe_failure_status if unfinished else 0)


def report_problems(results: list[ModelResult], config: Config) -> None:
    """One line on stderr per model that could not be analysed, and per probe that did not finish."""
    for result in results:
        if result.error is not None:
            tail = f"; {BUG_REPORT}" if result.internal else ""
            click.echo(f"relulint: error: {clean(result.path)}: {clean(result.error)}{tail}", err=True)
        for note in unfinished_probes(result):
            level = "error" if config.probe_failure_status == 2 else "warning"
            click.echo(f"relulint: {level}: {clean(result.path)}: {clean(note.message)}", err=True)


def _list_rules() -> str:
    rows = [f"{rule.id}  {rule.meta.name:<32} {str(rule.meta.severity):<8} {rule.meta.summary}" for rule in all_rules()]
    return "".join(row + "\n" for row in rows)


SEVERITIES = click.Choice(["error", "warning", "note"], case_sensitive=False)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(FORMATS),
    help="Output format of stdout, or of the one -o file. [default: text]",
)
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    help="Write a report to this file ('-' for stdout); repeat for several reports, each in the format its extension names (.txt .json .sarif .html).",
)
@click.option(
    "--output-format",
    type=click.Choice(["concise", "full"]),
    default=None,
    help="Text reports: one short line per finding, or each message in full. [default: concise]",
)
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Color in the terminal's text report; auto follows NO_COLOR, FORCE_COLOR and whether stdout is a terminal.",
)
@click.option("--select", multiple=True, help="Rule ids or prefixes to enable (RL2 = every bias rule). [default: RL]")
@click.option("--ignore", multiple=True, help="Rule ids or prefixes to disable.")
@click.option(
    "--fail-on", type=SEVERITIES, default=None, help="Lowest severity that makes the exit status 1. [default: error]"
)
@click.option(
    "--exit-zero",
    is_flag=True,
    default=None,
    help="Exit 0 even when findings are reported (2 still means an unreadable model).",
)
@click.option(
    "--probe/--no-probe", default=None, help="Run the onnxruntime probe that measures dead units. [default: on]"
)
@click.option(
    "--config",
    type=click.Path(),
    help="Configuration file (relulint.toml or pyproject.toml); default: found upward from the current folder.",
)
@click.option("--jobs", "-j", type=int, default=None, help="Models analysed in parallel processes. [default: 1]")
@click.option("--max-model-size", default=None, help="Largest model file to read, e.g. 512MB. [default: 2GB]")
@click.option("--batch", type=int, default=None, help="Probe batch size. [default: 8]")
@click.option(
    "--samples",
    default=None,
    help="Probe samples in all, or auto: draw until the dead units stop changing and their firing-rate bound "
    "is under 1%, within --probe-timeout. [default: every sample of --data, else auto]",
)
@click.option("--input-shape", multiple=True, help="Shape of a model input for the probe: NAME=1x3x224x224.")
@click.option(
    "--input-dist",
    default=None,
    help="Synthetic probe inputs: normal, normal:MEAN,STD, uniform:LOW,HIGH, or structured samples over the "
    "input's domain: smooth (smooth noise), strokes (pages with strokes), harmonic (voiced sound), structured (half smooth, half strokes or harmonic by the input's layout). [default: structured]",
)
@click.option(
    "--data",
    default=None,
    help="Real probe inputs: a .npz (one array per input), a .npy (one-input model), a folder of them, or a "
    "folder of images (PNG/JPEG/BMP, needs relulint[images]) or WAV files (see --preprocess); an integer "
    "input named like a mask (attention_mask) that the data lacks is fed ones.",
)
@click.option(
    "--preprocess",
    multiple=True,
    metavar="KEY=VALUE",
    help=f"How --data images and WAV files become inputs; repeatable: preset={'|'.join(PRESETS)} "
    "(scale, mean, std at once; default zero-one: x/255), resize=SHORTER_SIDE, crop=HxW (center), size=HxW "
    "(exact), channels=rgb|bgr, layout=nchw|nhwc, scale=X, mean=M1,M2,M3, std=S1,S2,S3, "
    "sample-rate=HZ (resampled linearly), window=SAMPLES.",
)
@click.option(
    "--probe-timeout", type=float, default=None, help="Seconds the probe may run. [default: 60; 300 with --data]"
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds one model's loading and static analysis may take. [default: 600]",
)
@click.option("--probe-memory", default=None, help="Memory the probe may use, e.g. 4GB. [default: 4GB]")
@click.option(
    "--probe-failure-status",
    type=click.IntRange(0, 2),
    default=None,
    help="Exit status when a probe started but did not finish (timeout, memory cap, crash). [default: 2]",
)
@click.option("--seed", type=int, default=None, help="Seed of the synthetic probe inputs. [default: 0]")
@click.option(
    "--input-range",
    multiple=True,
    help="Input domain for the proofs (RL6xx): NAME=LO,HI, or NAME=LO,HI/LO,HI/... per channel.",
)
@click.option(
    "--compare",
    metavar="OLD.onnx",
    default=None,
    help="An earlier checkpoint of the same model: report what changed (RL7xx).",
)
@click.option(
    "--sarif-root",
    default=None,
    help="Folder SARIF paths are relative to. [default: the git top level, else the current folder]",
)
@click.option(
    "--exclude",
    multiple=True,
    help="Patterns a folder search skips, replacing the defaults (.git, .venv, venv, node_modules, site-packages, build, dist, ...).",
)
@click.option("--extend-exclude", multiple=True, help="Patterns a folder search skips, besides the excluded ones.")
@click.option(
    "--respect-gitignore/--no-respect-gitignore",
    default=None,
    help="Skip files git ignores when searching folders (asks git when it is installed). [default: on]",
)
@click.option(
    "--from-data",
    is_flag=True,
    help="PATHS may be external data files: each stands for the models that name it; others are skipped (the pre-commit hook).",
)
@click.option("--list-rules", is_flag=True, help="List every rule and exit.")
@click.option("--explain", metavar="RULE", help="Print a rule's documentation and exit.")
@click.option("-q", "--quiet", is_flag=True, help="Only findings: no notes, no summary when clean.")
@click.option("-v", "--verbose", is_flag=True, help="Also model details and fix hints.")
@click.version_option(__version__, prog_name="relulint")
def main(**options: Any) -> None:
    """Lint ONNX models for the dying-ReLU problem.

    PATHS are .onnx files or folders searched for them. Exit status: 0 clean, 1 findings at or
    above --fail-on, 2 a usage error, a model that could not be analysed or a probe that did not
    finish (see --probe-failure-status), 3 an internal error of relulint (please report it).
    """
    if not debug():
        # numpy's RuntimeWarnings on hostile weights would break the one-line-per-problem promise;
        # the numbers involved are judged by the rules (non-finite, overflow) themselves.
        warnings.simplefilter("ignore", RuntimeWarning)
    try:
        status = _main(options)
    except UsageError as exc:
        click.echo(f"relulint: error: {clean(str(exc))}", err=True)
        status = 2
    except Exception as exc:  # a defect of relulint itself, never the model's: its own status
        if debug():
            raise
        text = " ".join(str(exc).split())[:300]
        click.echo(f"relulint: internal error: {type(exc).__name__}: {clean(text)}; {BUG_REPORT}", err=True)
        status = INTERNAL_ERROR_STATUS
    sys.exit(status)


def _main(options: dict[str, Any]) -> int:
    if options["list_rules"]:
        click.echo(_list_rules(), nl=False)
        return 0
    if options["explain"]:
        from relulint.docs import rule_page

        rule = rule_by_id(options["explain"])
        if rule is None:
            raise UsageError(unknown_rule(options["explain"].strip().upper(), "--explain"))
        click.echo(rule_page(rule.meta), nl=False)
        return 0
    if not options["paths"]:
        raise UsageError("no model given; usage: relulint [OPTIONS] PATH...")
    config = build_config(options)
    plan = plan_outputs(options["formats"], options["outputs"])
    search = Search(
        excludes=config.exclude + config.extend_exclude,
        respect_gitignore=config.respect_gitignore,
        from_data=options["from_data"],
    )
    models, path_errors = expand_paths(options["paths"], search)
    inputs = run_inputs(models, config)
    destinations = {dest: check_destination(dest, inputs) for _, dest in plan if dest is not None}
    if config.data and config.probe:
        _check_data(config.data)
    if not any(dest is None for _, dest in plan) and not options["quiet"]:
        plan.append(("text", None))  # reports go to files: still tell the terminal what was found
    from relulint.probe.runner import prestart, stop_spare

    if _probe_will_run(config, models):
        prestart()  # unless relulint.launch already did
    else:
        stop_spare()  # started on a guess by relulint.launch, not needed after all
    formats = {fmt for fmt, _ in plan}
    config = replace(config, digest=bool(formats & SHOW_SHA256))
    root = repository_root(config.sarif_root) if formats & {"sarif", "github"} else None
    if "sarif" in formats and root is not None:
        _refuse_outside(models, root)
    started = _now()
    run = Run(
        results=path_errors + run_models(models, config),
        config=config,
        started=started,
        finished=_now(),
        command_line=["relulint", *sys.argv[1:]],
        verbose=1 if options["verbose"] else (-1 if options["quiet"] else 0),
        root=root,
    )
    color = use_color(options["color"])
    report_problems(run.results, config)
    if "github" in formats:  # inside GitHub Actions: the table of all findings on the run's page
        problem = append_step_summary(step_summary(run, root or Path.cwd()))
        if problem:
            click.echo(f"relulint: warning: {problem}", err=True)
    for fmt, destination in plan:
        try:
            text = render(fmt, replace(run, color=destination is None and fmt == "text" and color))
        except FormatUnavailable as exc:
            raise UsageError(str(exc)) from None
        if destination is None:
            click.echo(text, nl=False, color=color)  # click would strip the colors off a pipe
        else:
            try:
                write_atomically(destinations[destination], text)
            except OSError as exc:
                raise UsageError(f"{destination}: cannot write the report ({exc.strerror or exc})") from None
    return exit_status(run.results, config)


def _check_data(path: str) -> None:
    """A --data source that cannot be read at all (missing, empty, a link out of its folder, images
    without Pillow) is a usage error; data that does not fit a model is a note on that model."""
    from relulint.probe.inputs import DataError
    from relulint.probe.media import inspect_source

    try:
        inspect_source(path)
    except DataError as exc:
        raise UsageError(str(exc).removeprefix("--data ")) from None


def _refuse_outside(models: list[str], root: Path) -> None:
    """GitHub code scanning rejects absolute ``file://`` URIs: a SARIF report names models below its root."""
    for model in models:
        if relative_path(model, root) is None:
            raise UsageError(
                f"{model}: lies outside the SARIF root '{root}' (the git top level or --sarif-root); "
                "give a --sarif-root that holds every model"
            )


def _probe_will_run(config: Config, models: list[str]) -> bool:
    """The probe runs in this process (not in --jobs workers) for at least one model."""
    if not config.probe or not models or (config.jobs > 1 and len(models) > 1):
        return False
    return any("probe" in rule.meta.needs for rule in selected_rules(config))


def use_color(choice: str) -> bool:
    """``--color``; with ``auto``, NO_COLOR and FORCE_COLOR (https://no-color.org, https://force-color.org)
    decide before the terminal does."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
