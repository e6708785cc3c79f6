"""The results of the analyses beyond the static graph, typed: what the context holds for the rules and the
model's result carries to the reports.

Each is computed only when a selected rule needs it (``RuleMeta.needs``) and could run; ``None`` otherwise,
with a note saying why. The static analyses (weight statistics, margins, chains) run for every model and
are read through the context (``Context.weight_stats``, ``relulint.margins.margins``, ``relulint.chains``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relulint.bounds.result import BoundsResult
from relulint.compare_result import CompareResult
from relulint.probe.result import ProbeResult

# The names a rule's ``needs`` may give, in the order the analyses run (the JSON's sections come in it too).
NAMES = ("probe", "bounds", "compare")


@dataclass
class Analyses:
    probe: ProbeResult | None = None  # dead units measured with onnxruntime (RL5xx)
    bounds: BoundsResult | None = None  # bounds proven over --input-range (RL6xx)
    compare: CompareResult | None = None  # this checkpoint against --compare OLD (RL7xx)

    def by_name(self) -> dict[str, ProbeResult | BoundsResult | CompareResult | None]:
        return {"probe": self.probe, "bounds": self.bounds, "compare": self.compare}

    def ran(self, name: str) -> bool:
        """Whether the analysis ``name`` (one of NAMES) has a result."""
        return self.by_name()[name] is not None

    def to_json(self) -> dict[str, Any]:
        """The JSON report's sections: one per analysis that has a result."""
        return {name: result.to_json() for name, result in self.by_name().items() if result is not None}
