"""The rule catalogue in rules/ is generated from the rules' metadata and must be current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from relulint.cli import main
from relulint.docs import expected_pages, rule_page
from relulint.findings import Severity
from relulint.rules import FAMILIES, all_rules

ROOT = Path(__file__).resolve().parent.parent
FAMILY_DIGIT = {"init": "1", "bias": "2", "norm": "3", "arch": "4", "probe": "5", "proof": "6", "compare": "7"}


def test_committed_pages_match_the_metadata():
    """Regenerate with: python -m relulint.docs"""
    folder = ROOT / "rules"
    expected = expected_pages()
    committed = {p.name: p.read_text(encoding="utf-8") for p in folder.glob("*.md")}
    missing = sorted(set(expected) - set(committed))
    stale = sorted(set(committed) - set(expected))
    outdated = sorted(name for name in set(expected) & set(committed) if expected[name] != committed[name])
    assert not (missing or stale or outdated), (
        f"rules/ is out of date (run python -m relulint.docs): missing {missing}, stale {stale}, outdated {outdated}"
    )


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.id)
def test_rule_metadata_is_complete(rule):
    meta = rule.meta
    module = rule.check.__module__
    family = module.split(".")[2]
    assert family in FAMILIES and meta.id[2] == FAMILY_DIGIT[family], f"{meta.id} lives in the {family} family"
    assert re.fullmatch(r"RL[1-7]\d\d", meta.id)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", meta.name)
    assert isinstance(meta.severity, Severity)
    assert meta.summary and meta.why.strip() and meta.fix.strip()
    for option in meta.options:
        assert option.description and isinstance(option.default, option.type)


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.id)
def test_every_rule_is_exercised_by_a_test(rule):
    tests = "".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name
    )
    assert rule.id in tests, f"no test mentions {rule.id}"


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.id)
def test_explain_prints_the_page(rule):
    result = CliRunner().invoke(main, ["--explain", rule.id.lower()])
    assert result.exit_code == 0
    assert result.output == rule_page(rule.meta)
    assert "## Why is this bad?" in result.output and "## How to fix" in result.output


def test_list_rules_names_every_rule():
    result = CliRunner().invoke(main, ["--list-rules"])
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()] == [r.id for r in all_rules()]
