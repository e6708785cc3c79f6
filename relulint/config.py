"""Configuration: ``[tool.relulint]`` in pyproject.toml or a relulint.toml, then the command line.

The file is found upward from the current folder (the first ``relulint.toml``, or
``pyproject.toml`` with a ``[tool.relulint]`` table, wins). Keys are the long CLI
option names; the command line overrides the file.
"""

from __future__ import annotations

import difflib
import math
import os
import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from relulint.analysis_options import ANALYSIS_OPTIONS, analysis_option, effective_options, legacy_option
from relulint.config_values import FILE_KEYS, PATH_KEYS, PATTERN_KEYS, rule_patterns, severity_level, unknown_rule
from relulint.discovery import DEFAULT_EXCLUDES
from relulint.errors import UsageError
from relulint.findings import Severity
from relulint.loader import DEFAULT_MAX_MODEL_SIZE
from relulint.preprocess import Preprocess, parse_preprocess
from relulint.rules import rule_by_id

# The probe's default time limits. Real data is what a verdict at error level rests on, and the user who
# gives it has asked for every sample: five times the data-free budget. On the corpus's busy 2-core
# machine 60 s let the OCR recognizers through 136 and 232 of their 384 text lines (hence false-dead units);
# on a quiet one they take 15 s and 13 s for all of them.
SYNTHETIC_PROBE_TIMEOUT = 60.0
DATA_PROBE_TIMEOUT = 300.0


@dataclass(frozen=True)
class Config:
    select: tuple[str, ...] = ("RL",)
    ignore: tuple[str, ...] = ()
    fail_on: Severity = Severity.ERROR
    exit_zero: bool = False
    probe: bool = True
    jobs: int = 1
    max_model_size: int = DEFAULT_MAX_MODEL_SIZE
    per_node_ignores: dict[str, tuple[str, ...]] = field(default_factory=dict)  # node glob -> rule ids
    rule_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # rule id -> options
    analysis_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # analysis -> its options set
    severities: dict[str, Severity] = field(default_factory=dict)  # rule id -> overriding severity
    # probe
    batch: int = 8
    samples: int | str | None = None  # N, "auto", or None: every sample of --data, else "auto"
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_dist: str = "structured"  # the data-free inputs with the fewest false-dead units on the corpus
    data: str | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)  # how image/audio files of --data become inputs
    probe_timeout: float | None = None  # None: SYNTHETIC_PROBE_TIMEOUT, or DATA_PROBE_TIMEOUT with --data
    timeout: float = 600.0  # seconds for one model's load and static analyses (a watchdog; the probe has its own)
    probe_memory: int = 4 * 1024**3
    probe_failure_status: int = 2  # exit status when a probe did not finish (timeout, memory cap, crash)
    seed: int = 0
    # proofs over an input domain: input name -> [(lo, hi)] (one pair: every element; several: per channel, axis 1)
    input_ranges: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    # checkpoint comparison: the older checkpoint of the same architecture
    compare: str | None = None
    # which files a folder search finds (relulint.discovery)
    exclude: tuple[str, ...] = DEFAULT_EXCLUDES
    extend_exclude: tuple[str, ...] = ()
    respect_gitignore: bool = True
    # reports
    output_format: str = "concise"  # text: concise (one short line per finding) or full
    sarif_root: str | None = None
    # Each model file's SHA-256, in the JSON, SARIF and HTML reports; the CLI leaves it out when no report
    # it writes shows it (hashing a large model costs a read of all of it).
    digest: bool = True
    source: str | None = None  # the configuration file used, for messages

    @property
    def probe_seconds(self) -> float:
        """The probe's time limit: --probe-timeout, else the default for the inputs it is given."""
        if self.probe_timeout is not None:
            return self.probe_timeout
        return DATA_PROBE_TIMEOUT if self.data else SYNTHETIC_PROBE_TIMEOUT

    def options_of_analysis(self, analysis: str) -> dict[str, Any]:
        """An analysis's effective options (``relulint.analysis_options``): defaults, legacy rule keys, its table."""
        return effective_options(analysis, self.rule_options, self.analysis_options)

    def options_for(self, rule_id: str) -> dict[str, Any]:
        rule = rule_by_id(rule_id)
        options = rule.meta.defaults() if rule else {}
        options.update(self.rule_options.get(rule_id, {}))
        return options


def anchored_patterns(patterns: tuple[str, ...], folder: Path) -> tuple[str, ...]:
    """Exclude patterns with a ``/`` made absolute from ``folder`` (the configuration file's, or the current
    one for the command line), as ruff anchors them; a pattern without one matches a name anywhere."""
    anchored = []
    for pattern in patterns:
        bare = pattern.rstrip("/")
        if "/" in bare and not os.path.isabs(bare):
            bare = os.path.join(os.path.abspath(folder), bare.removeprefix("./"))
            pattern = bare if pattern == pattern.rstrip("/") else bare + "/"
        anchored.append(pattern)
    return tuple(anchored)


def find_config_file(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        candidate = folder / "relulint.toml"
        if candidate.is_file():
            return candidate
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                tool = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {})
            except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
                continue
            if not isinstance(tool, dict) or "relulint" in tool:  # not a table: loading says so
                return pyproject
    return None


def load_config_file(path: Path) -> Config:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):  # a named pipe would block the read forever
        raise UsageError(f"{path}: not a regular file; give a relulint.toml or pyproject.toml")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML ({' '.join(str(exc).split())})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        table = _relulint_table(document) if path.name == "pyproject.toml" else document
        return config_from_table(table, Config(source=str(path)), folder=path.parent)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _relulint_table(document: dict[str, Any]) -> dict[str, Any]:
    tool = document.get("tool", {})
    if not isinstance(tool, dict):
        raise ValueError(f"'tool' must be a table, got {tool!r}")
    table = tool.get("relulint", {})
    if not isinstance(table, dict):
        raise ValueError(f"'tool.relulint' must be a table, got {table!r}")
    return table


def config_from_table(
    table: dict[str, Any], base: Config, folder: Path | None = None, command_line: bool = False
) -> Config:
    """Apply a ``[tool.relulint]``-shaped table on top of ``base``; raise ValueError on bad keys.

    ``folder`` is the configuration file's folder: relative paths in the file are taken from there.
    ``command_line``: the table holds options, named in messages as such (``--seed``).
    """
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key in FILE_KEYS:
            name, parse = FILE_KEYS[key]
            changes[name] = parse(value, f"--{key}" if command_line else key)
            if key in PATH_KEYS and folder is not None:
                changes[name] = _from_folder(changes[name], folder)
            if key in PATTERN_KEYS:
                changes[name] = anchored_patterns(changes[name], Path.cwd() if folder is None else folder)
        elif key == "per-node-ignores":
            if not isinstance(value, dict):
                raise ValueError(f"'per-node-ignores' must be a table of node glob = [rule ids], got {value!r}")
            changes["per_node_ignores"] = {
                str(glob): rule_patterns(ids, f"per-node-ignores.{glob}") for glob, ids in value.items()
            }
        elif key == "preprocess":
            changes["preprocess"] = parse_preprocess(value, "--preprocess" if command_line else key, base.preprocess)
        elif key == "rules":
            options, severities = _rule_tables(value)
            changes["rule_options"] = options
            changes["severities"] = severities
        elif key in ANALYSIS_OPTIONS:
            changes["analysis_options"] = {**base.analysis_options, key: _analysis_table(key, value)}
        else:
            known = [*FILE_KEYS, "per-node-ignores", "preprocess", "rules", *ANALYSIS_OPTIONS]
            close = difflib.get_close_matches(key, known, n=1)
            raise ValueError(f"unknown key '{key}'" + (f"; did you mean '{close[0]}'?" if close else ""))
    return replace(base, **changes)


def _from_folder(path: str, folder: Path) -> str:
    """A path from a configuration file, relative to that file's folder (kept short when it is here)."""
    if os.path.isabs(path) or folder in (Path(""), Path(".")):
        return path
    joined = os.path.normpath(folder / path)
    try:
        relative = os.path.relpath(joined)
    except ValueError:
        return joined
    return joined if relative.startswith("..") else relative


def _rule_tables(value: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Severity]]:
    if not isinstance(value, dict):
        raise ValueError(f"'rules' must hold one table per rule id, e.g. [tool.relulint.rules.RL201], got {value!r}")
    options: dict[str, dict[str, Any]] = {}
    severities: dict[str, Severity] = {}
    for rule_id, settings in value.items():
        rule = rule_by_id(rule_id)
        if rule is None:
            raise ValueError(unknown_rule(str(rule_id), f"rules.{rule_id}"))
        if not isinstance(settings, dict):
            raise ValueError(f"'rules.{rule_id}' must be a table, got {settings!r}")
        by_name = {option.name: option for option in rule.meta.options}
        for name, setting in settings.items():
            where = f"rules.{rule_id}.{name}"
            if name == "severity":
                severities[rule.id] = severity_level(setting, where)
                continue
            option = by_name.get(name) or legacy_option(rule.id, name)  # an analysis's option, set here as before
            if option is None:
                allowed = ", ".join(["severity", *by_name]) or "severity"
                raise ValueError(f"'rules.{rule_id}': unknown option '{name}' (allowed: {allowed})")
            try:
                coerced = option.coerce(setting, rule.id)
            except ValueError as exc:
                raise ValueError(f"'{where}': {exc}") from None
            options.setdefault(rule.id, {})[name] = _option_in_range(coerced, name, where)
    return options, severities


def _analysis_table(analysis: str, value: Any) -> dict[str, Any]:
    """``[tool.relulint.<analysis>]``: the analysis's own options, checked as a rule's are."""
    if not isinstance(value, dict):
        raise ValueError(f"'{analysis}' must be a table of the {analysis} analysis's options, got {value!r}")
    options: dict[str, Any] = {}
    for name, setting in value.items():
        option = analysis_option(analysis, name)
        if option is None:
            allowed = ", ".join(option.name for option in ANALYSIS_OPTIONS[analysis])
            raise ValueError(f"'{analysis}': unknown option '{name}' (allowed: {allowed})")
        try:
            coerced = option.coerce(setting, f"the {analysis} analysis")
        except ValueError as exc:
            raise ValueError(f"'{analysis}.{name}': {exc}") from None
        options[name] = _option_in_range(coerced, name, f"{analysis}.{name}")
    return options


def _option_in_range(value: Any, name: str, where: str) -> Any:
    """Every numeric rule option is a finite count, fraction, ratio or threshold: none may be negative,
    NaN or infinite (NaN compares false and would silence a rule), and fractions are at most 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"'{where}' must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"'{where}' must not be negative, got {value!r}")
    if "fraction" in name and value > 1:
        raise ValueError(f"'{where}' is a fraction from 0 to 1, got {value!r}")
    return value
