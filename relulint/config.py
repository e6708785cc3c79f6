"""Configuration: ``[tool.relulint]`` in pyproject.toml or a relulint.toml, then the command line.

The file is found upward from the current folder (the first ``relulint.toml``, or
``pyproject.toml`` with a ``[tool.relulint]`` table, wins). Keys are the long CLI
option names; the command line overrides the file.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from relulint.errors import UsageError
from relulint.findings import Severity
from relulint.loader import DEFAULT_MAX_MODEL_SIZE
from relulint.rules import all_rules, rule_by_id

SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3}


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
    samples: int = 32
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_dist: str = "normal"
    data: str | None = None
    probe_timeout: float = 60.0
    probe_memory: int = 4 * 1024**3
    seed: int = 0
    # proofs over an input domain: input name -> [(lo, hi)] (one pair: every element; several: per channel, axis 1)
    input_ranges: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    # checkpoint comparison: the older checkpoint of the same architecture
    compare: str | None = None
    # reports
    sarif_root: str | None = None
    source: str | None = None  # the configuration file used, for messages

    def options_for(self, rule_id: str) -> dict[str, Any]:
        rule = rule_by_id(rule_id)
        options = rule.meta.defaults() if rule else {}
        options.update(self.rule_options.get(rule_id, {}))
        return options


# key in the file -> (Config field, parser)
def _strings(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part for part in re.split(r"[,\s]+", value) if part]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{key}' must be a list of rule ids or prefixes")
    for pattern in value:
        if not re.fullmatch(r"RL\d{0,3}", pattern.strip().upper()):
            raise ValueError(f"'{key}': '{pattern}' is not a rule id or prefix such as RL2 or RL201")
    return tuple(v.strip().upper() for v in value)


def parse_size(value: Any, key: str = "size") -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", str(value).upper())
    if not match:
        raise ValueError(f"'{key}' must be a size such as 512MB or 2GB, got {value!r}")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)])


def parse_shape(text: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in re.split(r"[x,]", text.strip().lower()) if d)
    if not dims or any(d <= 0 for d in dims):
        raise ValueError
    return dims


def _input_shapes(value: Any, key: str) -> dict[str, tuple[int, ...]]:
    if not isinstance(value, dict):
        raise ValueError(f"'{key}' must be a table of input name = \"1x3x224x224\"")
    try:
        return {str(k): parse_shape(str(v)) for k, v in value.items()}
    except ValueError:
        raise ValueError(f"'{key}': shapes are written like 1x3x224x224") from None


def parse_range(text: str) -> tuple[tuple[float, float], ...]:
    """``lo,hi`` for every element, or ``lo,hi/lo,hi/...`` per channel."""
    pairs = []
    for part in text.split("/"):
        bounds = [float(v) for v in part.split(",")]
        if len(bounds) != 2 or not bounds[0] <= bounds[1]:
            raise ValueError
        pairs.append((bounds[0], bounds[1]))
    return tuple(pairs)


def _input_ranges(value: Any, key: str) -> dict[str, tuple[tuple[float, float], ...]]:
    if not isinstance(value, dict):
        raise ValueError(f"'{key}' must be a table of input name = [lo, hi] (or [[lo, hi], ...] per channel)")
    ranges = {}
    for name, spec in value.items():
        try:
            if isinstance(spec, str):
                ranges[str(name)] = parse_range(spec)
                continue
            pairs = spec if spec and isinstance(spec[0], list) else [spec]
            ranges[str(name)] = parse_range("/".join(",".join(str(float(v)) for v in pair) for pair in pairs))
        except (ValueError, TypeError, IndexError):
            raise ValueError(
                f"'{key}': the range of '{name}' must be lo,hi with lo <= hi, or lo,hi/lo,hi/... per channel"
            ) from None
    return ranges


def _positive(kind: type) -> Any:
    def parse(value: Any, key: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"'{key}' must be a positive number")
        return kind(value)

    return parse


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"'{key}' must be true or false")
    return value


def _severity(value: Any, key: str) -> Severity:
    return Severity.parse(str(value))


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string")
    return value


def _input_dist(value: Any, key: str) -> str:
    text = _string(value, key)
    if text != "normal" and not re.fullmatch(r"(normal:[-+.\deE]+,[-+.\deE]+|uniform:[-+.\deE]+,[-+.\deE]+)", text):
        raise ValueError(f"'{key}' must be normal, normal:MEAN,STD or uniform:LOW,HIGH, got {text!r}")
    return text


FILE_KEYS = {
    "select": ("select", _strings),
    "ignore": ("ignore", _strings),
    "fail-on": ("fail_on", _severity),
    "exit-zero": ("exit_zero", _boolean),
    "probe": ("probe", _boolean),
    "jobs": ("jobs", _positive(int)),
    "max-model-size": ("max_model_size", parse_size),
    "batch": ("batch", _positive(int)),
    "samples": ("samples", _positive(int)),
    "input-shape": ("input_shapes", _input_shapes),
    "input-dist": ("input_dist", _input_dist),
    "data": ("data", _string),
    "probe-timeout": ("probe_timeout", _positive(float)),
    "probe-memory": ("probe_memory", parse_size),
    "seed": ("seed", lambda v, k: int(v)),
    "sarif-root": ("sarif_root", _string),
    "input-range": ("input_ranges", _input_ranges),
    "compare": ("compare", _string),
}


def find_config_file(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        candidate = folder / "relulint.toml"
        if candidate.is_file():
            return candidate
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                if "relulint" in tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}):
                    return pyproject
            except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
                continue
    return None


def load_config_file(path: Path) -> Config:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such configuration file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML ({' '.join(str(exc).split())})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    table = document.get("tool", {}).get("relulint", {}) if path.name == "pyproject.toml" else document
    try:
        return config_from_table(table, Config(source=str(path)))
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None


def config_from_table(table: dict[str, Any], base: Config) -> Config:
    """Apply a ``[tool.relulint]``-shaped table on top of ``base``; raise ValueError on bad keys."""
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key in FILE_KEYS:
            name, parse = FILE_KEYS[key]
            changes[name] = parse(value, key)
        elif key == "per-node-ignores":
            if not isinstance(value, dict):
                raise ValueError("'per-node-ignores' must be a table of node glob = [rule ids]")
            changes["per_node_ignores"] = {
                str(glob): _strings(ids, f"per-node-ignores.{glob}") for glob, ids in value.items()
            }
        elif key == "rules":
            options, severities = _rule_tables(value)
            changes["rule_options"] = options
            changes["severities"] = severities
        else:
            raise ValueError(f"unknown key '{key}'")
    return replace(base, **changes)


def _rule_tables(value: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Severity]]:
    if not isinstance(value, dict):
        raise ValueError("'rules' must hold one table per rule id, e.g. [tool.relulint.rules.RL201]")
    options: dict[str, dict[str, Any]] = {}
    severities: dict[str, Severity] = {}
    for rule_id, settings in value.items():
        rule = rule_by_id(rule_id)
        if rule is None:
            known = ", ".join(r.id for r in all_rules())
            raise ValueError(f"'rules.{rule_id}': no such rule (known: {known})")
        if not isinstance(settings, dict):
            raise ValueError(f"'rules.{rule_id}' must be a table")
        by_name = {option.name: option for option in rule.meta.options}
        for name, setting in settings.items():
            if name == "severity":
                severities[rule.id] = Severity.parse(str(setting))
                continue
            if name not in by_name:
                allowed = ", ".join(["severity", *by_name]) or "severity"
                raise ValueError(f"'rules.{rule_id}': unknown option '{name}' (allowed: {allowed})")
            options.setdefault(rule.id, {})[name] = by_name[name].coerce(setting, rule.id)
    return options, severities
