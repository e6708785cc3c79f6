"""The analyses' own options, declared once: what an analysis needs to compute its numbers. The rules judge
those numbers with their own options (``RuleMeta.options``); an analysis never reads a rule's.

Set in ``[tool.relulint.<analysis>]`` (``[<analysis>]`` in a relulint.toml), e.g. ``[tool.relulint.margins]``.
A key that was a rule's option before its analysis had a table of its own is still read from that rule's
table, with the same meaning (``LEGACY_KEYS``); the analysis's table wins when both set it.
"""

from __future__ import annotations

from typing import Any

from relulint.rules import Option

MARGINS = "margins"

ANALYSIS_OPTIONS: dict[str, tuple[Option, ...]] = {
    MARGINS: (
        Option(
            "input_scale",
            float,
            1.0,
            "Root-mean-square scale σ_in of the model's inputs, where the propagation of scales starts.",
        ),
        Option(
            "constant_tolerance",
            float,
            1e-6,
            "A layer's weights count as constant (RL102's finding; no other rule judges the layer, and no scale is "
            "propagated through it) when their std is below this fraction of max(|mean|, He std).",
        ),
        Option(
            "k",
            float,
            3.0,
            "The per-layer `at_risk` metrics and the checkpoint comparison's static dead counts (RL701) count a "
            "unit whose margin is below -k.",
        ),
        Option(
            "scale_tolerance",
            float,
            1e-3,
            "For those counts, a normalized unit whose |gamma| is at or below this, with beta <= 0, counts too.",
        ),
    ),
}

# (rule id, key in its table) -> (analysis, option): the keys of a rule's table that set an analysis's option.
LEGACY_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("RL201", "input_scale"): (MARGINS, "input_scale"),
    ("RL102", "std_tolerance"): (MARGINS, "constant_tolerance"),
}


def analysis_option(analysis: str, name: str) -> Option | None:
    return next((option for option in ANALYSIS_OPTIONS.get(analysis, ()) if option.name == name), None)


def legacy_option(rule_id: str, key: str) -> Option | None:
    """The analysis's option that a rule's table sets under ``key`` (as it did before), or None."""
    target = LEGACY_KEYS.get((rule_id, key))
    return analysis_option(*target) if target else None


def effective_options(
    analysis: str, rule_options: dict[str, dict[str, Any]], analysis_options: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The analysis's options: their defaults, then its legacy keys in the rules' tables, then its own table."""
    options = {option.name: option.default for option in ANALYSIS_OPTIONS[analysis]}
    for (rule_id, key), (target, name) in LEGACY_KEYS.items():
        if target == analysis and key in rule_options.get(rule_id, {}):
            options[name] = rule_options[rule_id][key]
    options.update(analysis_options.get(analysis, {}))
    return options
