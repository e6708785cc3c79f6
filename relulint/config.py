"""Configuration: ``[tool.relulint]`` in pyproject.toml or a relulint.toml, then the command line.

The file is found upward from the current folder (the first ``relulint.toml``, or
``pyproject.toml`` with a ``[tool.relulint]`` table, wins). Keys are the long CLI
option names; the command line overrides the file.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import resource
import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from relulint.discovery import DEFAULT_EXCLUDES
from relulint.errors import UsageError
from relulint.findings import Severity
from relulint.loader import DEFAULT_MAX_MODEL_SIZE
from relulint.preprocess import Preprocess, parse_preprocess
from relulint.rules import all_rules, rule_by_id

# The structured synthetic inputs of relulint/probe/structured.py (named here too: that module imports numpy,
# which --version and --help do not load; a test keeps the two lists equal).
STRUCTURED_KINDS = ("structured", "smooth", "strokes", "harmonic")

SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3}


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
    source: str | None = None  # the configuration file used, for messages

    @property
    def probe_seconds(self) -> float:
        """The probe's time limit: --probe-timeout, else the default for the inputs it is given."""
        if self.probe_timeout is not None:
            return self.probe_timeout
        return DATA_PROBE_TIMEOUT if self.data else SYNTHETIC_PROBE_TIMEOUT

    def options_for(self, rule_id: str) -> dict[str, Any]:
        rule = rule_by_id(rule_id)
        options = rule.meta.defaults() if rule else {}
        options.update(self.rule_options.get(rule_id, {}))
        return options


def rule_ids() -> list[str]:
    return [rule.id for rule in all_rules()]


def unknown_rule(pattern: str, where: str) -> str:
    """The message for a rule id (or prefix) that names no rule, with the closest id suggested."""
    close = difflib.get_close_matches(pattern, rule_ids(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else " (see relulint --list-rules)"
    return f"'{where}': no rule '{pattern}'{hint}"


def _strings(value: Any, key: str) -> tuple[str, ...]:
    """Rule ids or prefixes (``RL2`` = every bias rule); each must name at least one rule."""
    if isinstance(value, str):
        value = [part for part in re.split(r"[,\s]+", value) if part]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{key}' must be a list of rule ids or prefixes, got {value!r}")
    patterns = tuple(v.strip().upper() for v in value)
    for pattern in patterns:
        if not re.fullmatch(r"RL\d{0,3}", pattern):
            raise ValueError(f"'{key}': '{pattern}' is not a rule id or prefix such as RL2 or RL201")
        if not any(rule_id.startswith(pattern) for rule_id in rule_ids()):
            raise ValueError(unknown_rule(pattern, key))
    return patterns


def parse_size(value: Any, key: str = "size") -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", str(value).upper()) if isinstance(value, str) else None
    size = int(float(match.group(1)) * SIZE_UNITS[match.group(2)]) if match else 0
    if size <= 0:
        raise ValueError(f"'{key}' must be a size such as 512MB or 2GB, got {value!r}")
    return size


def memory_limit() -> int | None:
    """The most memory a process of this run can have: physical memory, or a lower address-space limit."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft > 0:
        limits.append(soft)
    return min(limits) if limits else None


def _probe_memory(value: Any, key: str) -> int:
    size = parse_size(value, key)
    limit = memory_limit()
    if limit is not None and size > limit:
        raise ValueError(
            f"'{key}' is {_shown_size(size)}, more than the {_shown_size(limit)} this machine lets a process have"
        )
    return size


def _shown_size(size: int) -> str:
    return f"{size / 1024**3:.1f} GB" if size >= 1024**3 else f"{size / 1024**2:.0f} MB"


MAX_DIM = 2**31 - 1


def parse_shape(text: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in re.split(r"[x,]", text.strip().lower()) if d)
    if not dims or any(not 0 < d <= MAX_DIM for d in dims):
        raise ValueError
    return dims


def _input_shapes(value: Any, key: str) -> dict[str, tuple[int, ...]]:
    if not isinstance(value, dict):
        raise ValueError(f"'{key}' must be a table of input name = \"1x3x224x224\", got {value!r}")
    shapes = {}
    for name, shape in value.items():
        try:
            if isinstance(shape, list) and all(type(d) is int for d in shape):
                shape = "x".join(str(d) for d in shape)
            if not isinstance(shape, str):
                raise ValueError
            shapes[str(name)] = parse_shape(shape)
        except ValueError:
            raise ValueError(
                f"'{key}': the shape of '{name}' must be written like \"1x3x224x224\" (or [1, 3, 224, 224]), got {shape!r}"
            ) from None
    return shapes


def parse_range(text: str) -> tuple[tuple[float, float], ...]:
    """``lo,hi`` for every element, or ``lo,hi/lo,hi/...`` per channel."""
    pairs = []
    for part in text.split("/"):
        bounds = [float(v) for v in part.split(",")]
        if len(bounds) != 2 or not all(map(math.isfinite, bounds)) or not bounds[0] <= bounds[1]:
            raise ValueError
        pairs.append((bounds[0], bounds[1]))
    return tuple(pairs)


def _input_ranges(value: Any, key: str) -> dict[str, tuple[tuple[float, float], ...]]:
    if not isinstance(value, dict):
        raise ValueError(
            f"'{key}' must be a table of input name = [lo, hi] (or [[lo, hi], ...] per channel), got {value!r}"
        )
    ranges = {}
    for name, spec in value.items():
        try:
            if isinstance(spec, str):
                ranges[str(name)] = parse_range(spec)
                continue
            if not isinstance(spec, list):
                raise ValueError
            pairs = spec if spec and isinstance(spec[0], list) else [spec]
            if not all(isinstance(pair, list) for pair in pairs):
                raise ValueError
            ranges[str(name)] = parse_range("/".join(",".join(str(_number(v)) for v in pair) for pair in pairs))
        except (ValueError, TypeError, IndexError):
            raise ValueError(
                f"'{key}': the range of '{name}' must be finite lo,hi with lo <= hi, or lo,hi/lo,hi/... per channel"
            ) from None
    return ranges


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError
    return float(value)


def _whole(low: int, high: int) -> Any:
    """A TOML integer (not a float such as 8.0 or inf) from ``low`` to ``high``."""

    def parse(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"'{key}' must be a whole number from {low} to {high:,}, got {value!r}")
        return value

    return parse


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_SECONDS:
        raise ValueError(f"'{key}' must be a number of seconds above 0 and at most {MAX_SECONDS:,}, got {value!r}")
    return float(value)  # NaN fails the comparison above: it would disable the limit


MAX_SECONDS = 7 * 24 * 3600


def _samples(value: Any, key: str) -> int | str:
    """A whole number of samples, or "auto" (the command line gives both as text)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if not text.isdigit():
            raise ValueError(f"'{key}' must be a whole number of samples or auto, got {value!r}")
        value = int(text)
    return _whole(1, 100_000_000)(value, key)


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"'{key}' must be true or false")
    return value


def _severity(value: Any, key: str) -> Severity:
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be error, warning or note, got {value!r}")
    try:
        return Severity.parse(value)
    except ValueError as exc:
        raise ValueError(f"'{key}': {exc}") from None


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{key}' must be a non-empty string, got {value!r}")
    return value


def _input_dist(value: Any, key: str) -> str:
    text = _string(value, key)
    kind, _, arguments = text.partition(":")
    if text == "normal" or text in STRUCTURED_KINDS:
        return text
    problem = (
        f"'{key}' must be normal, normal:MEAN,STD (STD > 0), uniform:LOW,HIGH (LOW < HIGH), "
        f"{', '.join(STRUCTURED_KINDS)}, got {text!r}"
    )
    try:
        first, second = (float(part) for part in arguments.split(","))
    except ValueError:
        raise ValueError(problem) from None
    finite = math.isfinite(first) and math.isfinite(second)
    if (
        not finite
        or (kind == "normal" and second <= 0)
        or (kind == "uniform" and first >= second)
        or kind
        not in (
            "normal",
            "uniform",
        )
    ):
        raise ValueError(problem)
    return text


def _patterns(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"'{key}' must be a list of file or folder patterns such as \"data/*\", got {value!r}")
    return tuple(v.strip() for v in value)


def _output_format(value: Any, key: str) -> str:
    if value not in ("concise", "full"):
        raise ValueError(f"'{key}' must be concise or full, got {value!r}")
    return str(value)


def _status(value: Any, key: str) -> int:
    if isinstance(value, bool) or value not in (0, 1, 2):
        raise ValueError(f"'{key}' must be an exit status 0, 1 or 2, got {value!r}")
    return int(value)


FILE_KEYS = {
    "select": ("select", _strings),
    "ignore": ("ignore", _strings),
    "fail-on": ("fail_on", _severity),
    "exit-zero": ("exit_zero", _boolean),
    "probe": ("probe", _boolean),
    "jobs": ("jobs", _whole(1, 256)),
    "max-model-size": ("max_model_size", parse_size),
    "batch": ("batch", _whole(1, 65_536)),
    "samples": ("samples", _samples),
    "input-shape": ("input_shapes", _input_shapes),
    "input-dist": ("input_dist", _input_dist),
    "data": ("data", _string),
    "probe-timeout": ("probe_timeout", _seconds),
    "timeout": ("timeout", _seconds),
    "probe-memory": ("probe_memory", _probe_memory),
    "probe-failure-status": ("probe_failure_status", _status),
    "seed": ("seed", _whole(0, 2**32 - 1)),
    "sarif-root": ("sarif_root", _string),
    "exclude": ("exclude", _patterns),
    "extend-exclude": ("extend_exclude", _patterns),
    "respect-gitignore": ("respect_gitignore", _boolean),
    "output-format": ("output_format", _output_format),
    "input-range": ("input_ranges", _input_ranges),
    "compare": ("compare", _string),
}


# Keys whose values are paths: in a file, relative to the file's folder (as ruff does).
PATH_KEYS = ("data", "compare", "sarif-root")
PATTERN_KEYS = ("exclude", "extend-exclude")


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
                str(glob): _strings(ids, f"per-node-ignores.{glob}") for glob, ids in value.items()
            }
        elif key == "preprocess":
            changes["preprocess"] = parse_preprocess(value, "--preprocess" if command_line else key, base.preprocess)
        elif key == "rules":
            options, severities = _rule_tables(value)
            changes["rule_options"] = options
            changes["severities"] = severities
        else:
            close = difflib.get_close_matches(key, [*FILE_KEYS, "per-node-ignores", "preprocess", "rules"], n=1)
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
                severities[rule.id] = _severity(setting, where)
                continue
            if name not in by_name:
                allowed = ", ".join(["severity", *by_name]) or "severity"
                raise ValueError(f"'rules.{rule_id}': unknown option '{name}' (allowed: {allowed})")
            try:
                coerced = by_name[name].coerce(setting, rule.id)
            except ValueError as exc:
                raise ValueError(f"'{where}': {exc}") from None
            options.setdefault(rule.id, {})[name] = _option_in_range(coerced, name, where)
    return options, severities


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
