"""Rules read the unit view, the analyses and their own options - never raw ONNX nodes or another rule's options.

A rule module that imports the graph or loader layers, or reaches into ``ctx.graph`` / ``ctx.loaded``,
re-derives what the unit view should hold: the pattern then lives in two places (CONTRIBUTING.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import relulint.rules

RULES = Path(relulint.rules.__file__).parent
RAW_MODULES = {"relulint.graph", "relulint.loader", "relulint.wire", "relulint.tensors", "onnx"}
RAW_CONTEXT_ATTRIBUTES = {"graph", "loaded"}


def raw_reads(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0:2] != ["relulint", "rules"]:
            if node.module in RAW_MODULES or node.module.startswith("onnx."):
                found.add(f"import {node.module}")
        elif isinstance(node, ast.Import):
            found.update(f"import {alias.name}" for alias in node.names if alias.name.split(".")[0] == "onnx")
        elif isinstance(node, ast.Attribute) and node.attr in RAW_CONTEXT_ATTRIBUTES:
            if isinstance(node.value, ast.Name) and node.value.id == "ctx":
                found.add(f"ctx.{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr in ("options_for", "rule_options"):
            found.add(f"{node.attr}: another rule's options")  # a rule gets its own as check()'s argument
    return found


def rule_modules() -> list[Path]:
    return sorted(p for p in RULES.glob("*/rl*.py"))


def test_rule_modules_read_only_the_unit_view_the_analyses_and_their_options():
    assert len(rule_modules()) >= 19  # every family is found
    offenders = {}
    for path in rule_modules():
        name = path.relative_to(RULES).as_posix()
        reads = raw_reads(path)
        if reads:
            offenders[name] = sorted(reads)
    assert offenders == {}, f"rules reading raw nodes: {offenders}"


def test_the_boundary_check_sees_a_raw_read(tmp_path):
    module = tmp_path / "rl999_example.py"
    module.write_text(
        "from relulint.graph import Graph\n\ndef check(ctx, options):\n"
        "    limit = ctx.config.options_for('RL501')['error_fraction']\n    return [n for n in ctx.graph]\n",
        encoding="utf-8",
    )
    assert raw_reads(module) == {"import relulint.graph", "ctx.graph", "options_for: another rule's options"}


def test_a_rule_needs_only_analyses_the_context_holds_typed():
    from dataclasses import fields

    from relulint.analyses import NAMES, Analyses
    from relulint.rules import all_rules

    assert tuple(field.name for field in fields(Analyses)) == NAMES == tuple(Analyses().by_name())
    needed = {need for rule in all_rules() for need in rule.meta.needs}
    assert needed == set(NAMES)  # every analysis has a rule, and no rule names one the context lacks
    assert not any(Analyses().ran(name) for name in NAMES) and Analyses().to_json() == {}


# ---- analyses read their own options ------------------------------------------------------------------
PACKAGE = RULES.parent
# Where a rule's options are legitimately read: the configuration that holds them, the engine that hands
# each rule its own, the renderers that draw the rules' thresholds, and the rules (checked above).
OPTION_READERS = {"config.py", "engine.py"}


def option_reads(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in ("options_for", "rule_options"):
            found.add(node.attr)
    return found


def test_no_analysis_reads_a_rules_options():
    readers = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in OPTION_READERS or relative.split("/")[0] in ("rules", "report"):
            continue
        reads = option_reads(path)
        if reads:
            readers[relative] = sorted(reads)
    assert readers == {}, f"modules reading rules' options (an analysis declares its own): {readers}"


def test_the_option_check_sees_a_read(tmp_path):
    module = tmp_path / "analysis.py"
    module.write_text("def settings(ctx):\n    return ctx.config.options_for('RL201')['k']\n", encoding="utf-8")
    assert option_reads(module) == {"options_for"}
