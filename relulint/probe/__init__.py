"""The probe: how many units are dead on actual inputs, measured with onnxruntime.

The engine calls ``start_probe_analysis(ctx)`` when a selected rule needs the probe, runs the
static rules while the probe's child process works, then calls ``finish()`` on what it returned
(``run_probe_analysis(ctx)`` does both at once). The probe stores a ``ProbeResult`` in
``ctx.analyses.probe`` and the per-layer metrics (dead, dead_fraction, rarely_active,
rarely_active_fraction, probe_samples), or adds a note saying why the probe did not run.

Imports stay inside the function: the probe's child process imports this package too,
and must not pay for onnx or the relulint core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relulint.context import Context
    from relulint.probe.analysis import PendingProbe


def run_probe_analysis(ctx: Context) -> None:
    from relulint.probe.analysis import run_probe

    run_probe(ctx)


def start_probe_analysis(ctx: Context) -> PendingProbe | None:
    from relulint.probe.analysis import start_probe

    return start_probe(ctx)
