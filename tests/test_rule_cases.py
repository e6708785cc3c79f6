"""Every case of tests/rule_cases: the rule's findings on its model are exactly the expected ones."""

from __future__ import annotations

import onnx
import pytest
from rule_cases import CASES, Case

from relulint.config import Config
from relulint.engine import analyse


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.rule}: {case.shows}")
def test_rule_case(tmp_path, case: Case):
    path = tmp_path / "model.onnx"
    onnx.save(case.build(), path)
    result = analyse(str(path), Config(probe=False, select=(case.rule,)))
    assert result.error is None, result.error
    got = tuple((f.node, str(f.severity)) for f in result.findings if f.rule == case.rule)
    assert got == case.expected


def test_every_static_rule_has_a_firing_and_a_silent_case():
    from relulint.rules import all_rules

    static = {rule.id for rule in all_rules() if not rule.meta.needs}
    firing = {case.rule for case in CASES if case.expected}
    silent = {case.rule for case in CASES if not case.expected}
    assert static <= firing, static - firing
    assert static - {"RL102", "RL103"} <= silent  # a clean model is the silent case of the weight-defect rules
