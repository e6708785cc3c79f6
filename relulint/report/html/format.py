"""Text and numbers as the HTML report shows them: escaped model text, short numbers, input domains.

These read values from the JSON form of a result, which may be missing, ``"nan"`` strings or of the
wrong type, so every reader here turns what it cannot show into ``None`` or "—".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

from relulint.findings import json_number
from relulint.report.text import clean


def show(value: Any) -> Markup:
    """Model-supplied text for the page: control characters made visible, then HTML-escaped."""
    return escape(clean("" if value is None else str(value)))


def show_code(value: Any) -> Markup:
    """Like ``show``, and `backticked` spans (rules write them in messages) become <code>."""
    parts = clean("" if value is None else str(value)).split("`")
    if len(parts) % 2 == 0:  # unbalanced backticks: show them as they are
        return escape("`".join(parts))
    return Markup("").join(escape(p) if i % 2 == 0 else Markup("<code>%s</code>") % p for i, p in enumerate(parts))


def number(value: Any) -> float | None:
    """A finite float from a JSON value or a typed result, as the JSON report writes it ("nan"/"inf" strings,
    non-finite numbers and missing values become None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(json_number(float(value)))


def fmt_number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 10_000 or abs(value) < 0.001:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{max(digits - 1, 0)}f}".rstrip("0").rstrip(".")


def fmt_percent(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.1f}%" if value < 0.999 or value == 1 else f"{value * 100:.2f}%"


def fmt_time(iso: str) -> str:
    """2024-01-02T03:04:05Z -> 2024-01-02 03:04:05 UTC (other text is shown as it is)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)Z", iso)
    return f"{match.group(1)} {match.group(2)} UTC" if match else iso


def fmt_bytes(size: Any) -> str:
    value = number(size)
    if value is None:
        return "—"
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return "—"


def as_int(value: Any) -> int | None:
    """An integer from a JSON value (booleans and everything else become None)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_object(value: Any) -> dict[str, Any] | None:
    """A JSON object, or None for anything else."""
    return value if isinstance(value, dict) else None


def domain_text(domain: Mapping[str, Sequence[Sequence[float]]] | None) -> str:
    """x ∈ [0, 1]; y ∈ 3 channel ranges (for one input, or several)."""
    parts = []
    for name, pairs in (domain or {}).items():
        if not pairs:
            continue
        if len(pairs) == 1 and len(pairs[0]) == 2:
            parts.append(f"{name} ∈ {_range_text(pairs[0])}")
        else:
            parts.append(f"{name} ∈ {len(pairs)} channel ranges")
    return "; ".join(parts)


def domain_detail(domain: Mapping[str, Sequence[Sequence[float]]] | None) -> str:
    """Every range of the domain, for the tooltip when channels have their own."""
    return "; ".join(
        f"{name}: " + ", ".join(_range_text(pair) for pair in pairs if len(pair) == 2)
        for name, pairs in (domain or {}).items()
    )


def _range_text(pair: Sequence[float]) -> str:
    return f"[{_bound_text(number(pair[0]), pair[0])}, {_bound_text(number(pair[1]), pair[1])}]"


def _bound_text(value: float | None, raw: Any) -> str:
    return fmt_number(value, 4) if value is not None else str(raw)
