"""Wording shared by the proof rules: the input domain and the units, in a message."""

from __future__ import annotations

import numpy as np

from relulint.bounds.result import BoundsResult


def domain_text(result: BoundsResult) -> str:
    parts = []
    for name, pairs in result.domain.items():
        if len(pairs) == 1:
            parts.append(f"{name} ∈ [{pairs[0][0]:g}, {pairs[0][1]:g}]")
        else:
            parts.append(f"{name} ∈ per-channel [{', '.join(f'{lo:g}..{hi:g}' for lo, hi in pairs)}]")
    return "; ".join(parts)


def unit_list(indices: np.ndarray, values: np.ndarray, relation: str, worst: int) -> str:
    shown = ", ".join(f"unit {int(i)} {relation} {values[i]:.3g}" for i in indices[:worst])
    return shown + (", …" if indices.size > worst else "")
