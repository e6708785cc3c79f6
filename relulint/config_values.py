"""The values of the configuration's keys: one parser per kind (sizes, shapes, ranges, seconds, rule ids...),
and ``FILE_KEYS``, the table of every plain key, the ``Config`` field it sets and its parser.

Each parser takes the value (TOML, or the command line's text) and the key to name in its message, and
raises ``ValueError`` with one line; ``relulint.config`` applies them.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import resource
from typing import Any

from relulint.findings import Severity
from relulint.rules import all_rules

# The structured synthetic inputs of relulint/probe/structured.py (named here too: that module imports numpy,
# which --version and --help do not load; a test keeps the two lists equal).
STRUCTURED_KINDS = ("structured", "smooth", "strokes", "harmonic")

SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3}


def rule_ids() -> list[str]:
    return [rule.id for rule in all_rules()]


def unknown_rule(pattern: str, where: str) -> str:
    """The message for a rule id (or prefix) that names no rule, with the closest id suggested."""
    close = difflib.get_close_matches(pattern, rule_ids(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else " (see relulint --list-rules)"
    return f"'{where}': no rule '{pattern}'{hint}"


def rule_patterns(value: Any, key: str) -> tuple[str, ...]:
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


def severity_level(value: Any, key: str) -> Severity:
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
    "select": ("select", rule_patterns),
    "ignore": ("ignore", rule_patterns),
    "fail-on": ("fail_on", severity_level),
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
