"""The rule registry.

A rule is one module under a family package (``init``, ``bias``, ``norm``,
``arch``, ``probe``, ``proof``, ``compare``) that defines ``META`` (a ``RuleMeta``)
and one pure function ``check(ctx, options) -> Iterable[Finding]``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

from relulint.findings import Finding, Severity

FAMILIES = ("init", "bias", "norm", "arch", "probe", "proof", "compare")
DOCS_BASE = "https://github.com/relulint/relulint/blob/main/rules/"


@dataclass(frozen=True)
class Option:
    name: str
    type: type  # float, int, bool or str
    default: Any
    description: str

    def coerce(self, value: Any, rule_id: str) -> Any:
        ok = isinstance(value, self.type) and not (self.type is not bool and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise ValueError(f"option '{self.name}' of {rule_id} must be a {self.type.__name__}, got {value!r}")
        return value


@dataclass(frozen=True)
class RuleMeta:
    id: str  # e.g. "RL201"
    name: str  # kebab-case, e.g. "large-negative-bias"
    severity: Severity  # default severity; a rule may report a finding at another level
    summary: str  # one line: what it detects
    why: str  # Markdown: why it matters
    fix: str  # Markdown: how to fix it
    example: str = ""  # Markdown: an example that fires it
    options: tuple[Option, ...] = ()
    needs: tuple[str, ...] = ()  # analyses beyond the static graph: "probe", "bounds", "compare"
    tags: tuple[str, ...] = field(default=())
    # The milder companion of these rules: a finding of one of them on the same node replaces this rule's
    # (the engine drops it), so a layer is reported once, at the stronger level, without this rule reading
    # the other's options.
    yields_to: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        return {
            "1": "initialization",
            "2": "biases",
            "3": "normalization",
            "4": "architecture",
            "5": "probe",
            "6": "proof",
            "7": "checkpoint comparison",
        }[self.id[2]]

    @property
    def help_uri(self) -> str:
        return f"{DOCS_BASE}{self.id}.md"

    def defaults(self) -> dict[str, Any]:
        return {option.name: option.default for option in self.options}


# check(ctx, options): ctx is a relulint.context.Context. The registry sits below the context (the
# configuration reads the registry, the context holds the configuration), so it does not name that type.
CheckFunction = Callable[[Any, dict[str, Any]], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    meta: RuleMeta
    check: CheckFunction

    @property
    def id(self) -> str:
        return self.meta.id


@cache
def all_rules() -> tuple[Rule, ...]:
    """Every rule, sorted by id, discovered from the family packages."""
    rules: dict[str, Rule] = {}
    for family in FAMILIES:
        try:
            package = importlib.import_module(f"{__name__}.{family}")
        except ModuleNotFoundError:
            continue
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            rule = _rule_from_module(module)
            if rule.id in rules:
                raise RuntimeError(f"rule id {rule.id} defined twice")
            rules[rule.id] = rule
    return tuple(rules[key] for key in sorted(rules))


def _rule_from_module(module: ModuleType) -> Rule:
    meta = getattr(module, "META", None)
    check = getattr(module, "check", None)
    if not isinstance(meta, RuleMeta) or not callable(check):
        raise RuntimeError(f"{module.__name__} must define META (RuleMeta) and check(ctx, options)")
    return Rule(meta, check)


def rule_by_id(rule_id: str) -> Rule | None:
    wanted = rule_id.strip().upper()
    return next((rule for rule in all_rules() if rule.id == wanted), None)


def matches(rule_id: str, patterns: Iterable[str]) -> bool:
    """True when a pattern is the id or a prefix of it (``RL2`` matches every bias rule)."""
    return any(rule_id.startswith(pattern.strip().upper()) for pattern in patterns)
