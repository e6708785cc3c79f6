"""relulint's CLI on a corpus model (a subprocess, JSON output), and its verdicts checked against the truth."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corpus.truth import TrueLayer

PROBE_LAYER_RULES = {"RL501", "RL502"}  # one finding per layer, "more than <threshold> of its units dead"
NETWORK_RULE = "RL503"


@dataclass
class Verdict:
    """One relulint run on one model, compared unit by unit with the truth."""

    run: str
    command: list[str]
    exit_code: int
    seconds: float
    error: str = ""  # stderr's first line when relulint refused or crashed
    probe_ran: bool = False
    probe_inputs: str = ""  # what relulint says it probed with
    probe_samples: int = 0
    probed_layers: int = 0
    matched_layers: int = 0
    claimed_dead: int = 0  # units relulint calls dead, all probed layers
    true_dead: int = 0  # units truly dead in the sense this relulint claims (see _true_dead)
    false_dead: int = 0  # called dead, alive on the realistic inputs
    false_dead_pooled: int = 0  # of false_dead: in layers fed by a global pooling (squeeze-excitation)
    missed_dead: int = 0  # dead on the realistic inputs, called alive or never probed
    unprobed_dead: int = 0  # of missed_dead: in ReLU-family layers relulint did not probe
    misread_layers: int = 0  # probed at an inner tensor of a decomposed activation (hard-swish's Clip)
    misread_missed: int = 0  # of missed_dead: in those layers
    unmatched: list[str] = field(default_factory=list)  # probed layers that are no true ReLU-family unit
    unprobed: list[str] = field(default_factory=list)  # true ReLU-family layers relulint did not probe
    layers_equal: int = 0  # matched layers whose dead count equals the truth's
    wrong_layers: dict[str, list[int]] = field(default_factory=dict)  # layer -> [false-dead, missed] where not 0
    severities: Counter = field(default_factory=Counter)
    rules: Counter = field(default_factory=Counter)  # "RL501:error" -> count
    false_findings: Counter = field(default_factory=Counter)  # severity -> probe findings the truth refutes
    false_rules: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    family: str = ""  # the row of the totals it counts in (bench/corpus.py FAMILIES)


def run_relulint(model: Path, flags: list[str], timeout: float = 900.0) -> tuple[int, dict | None, str, float]:
    command = [sys.executable, "-m", "relulint", "--format", "json", *flags, str(model)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, None, f"no answer in {timeout:.0f} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    try:
        report = json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        report = None
    return done.returncode, report, done.stderr, seconds


def _told_apart(layers: dict) -> bool:
    """Whether this relulint reports never-positive apart from dead (variants: dead only when always 0)."""
    return any("never_positive" in layer for layer in layers.values())


def _true_dead(layer: TrueLayer, told_apart: bool) -> np.ndarray:
    """The truth in the sense relulint claims: never > 0, or for variants (when told apart) always 0."""
    return layer.no_gradient if told_apart else layer.dead


def _dead_vector(layer: dict, always_zero: bool = False) -> np.ndarray | None:
    """Which units relulint calls dead in one probed layer, from its per-unit positive rates and maxima.

    ``always_zero``: a variant layer of a relulint that calls such a unit dead only when its output
    is 0 on every value (maximum and mean 0), not merely never positive.
    """
    rate, high = layer.get("positive_rate"), layer.get("max")
    if isinstance(rate, list) and isinstance(high, list):
        # Rates and maxima are rounded in the JSON: a unit is dead only when both say "never > 0".
        dead = (np.asarray(rate, float) <= 0) & ~(np.asarray(high, float) > 0)
        if always_zero and isinstance(layer.get("mean"), list):
            dead &= (np.asarray(high, float) == 0) & (np.asarray(layer["mean"], float) == 0)
        return dead
    return None


def compare(run: str, command: list[str], result, truth: list[TrueLayer]) -> Verdict:
    exit_code, report, stderr, seconds = result
    verdict = Verdict(run, command, exit_code, seconds)
    if report is None or not report.get("models"):
        verdict.error = (stderr.strip().splitlines() or ["no output"])[-1][:300]
        verdict.missed_dead = verdict.true_dead = sum(int(layer.dead.sum()) for layer in truth)
        verdict.unprobed_dead = verdict.missed_dead
        return verdict
    model = report["models"][0]
    if exit_code not in (0, 1):
        verdict.error = (stderr.strip().splitlines() or [""])[-1][:300]
    probe = model.get("probe") or {}
    layers = probe.get("layers") or {}
    verdict.probe_ran = bool(layers)
    verdict.probe_inputs = str(probe.get("inputs", ""))
    verdict.probe_samples = int(probe.get("samples") or 0)
    verdict.probed_layers = len(layers)
    output_of = {unit["name"]: unit.get("output") for unit in model.get("units", [])}
    by_tensor = {}
    for layer in truth:
        for name in {layer.output, *layer.aliases}:
            by_tensor[name] = layer
    told_apart = _told_apart(layers)
    verdict.true_dead = sum(int(_true_dead(layer, told_apart).sum()) for layer in truth)
    matched: dict[str, TrueLayer] = {}  # relulint layer name -> true layer
    for name, layer in layers.items():
        true = by_tensor.get(output_of.get(name) or "")
        dead = _dead_vector(layer, told_apart and true is not None and true.variant)
        claimed = int(layer.get("dead", 0 if dead is None else dead.sum()))
        verdict.claimed_dead += claimed
        if true is None or dead is None or dead.size != true.units:
            verdict.unmatched.append(name)
            continue
        matched[name] = true
        misread = output_of.get(name) != true.output
        true_dead = _true_dead(true, told_apart)
        false_dead, missed = int((dead & ~true_dead).sum()), int((~dead & true_dead).sum())
        verdict.false_dead += false_dead
        verdict.false_dead_pooled += false_dead if true.pooled else 0
        verdict.missed_dead += missed
        verdict.misread_layers += int(misread)
        verdict.misread_missed += missed if misread else 0
        if false_dead or missed:
            verdict.wrong_layers[name] = [false_dead, missed]
        verdict.layers_equal += int(claimed == int(true_dead.sum()))
    verdict.matched_layers = len(matched)
    seen = {id(layer) for layer in matched.values()}
    for layer in truth:
        if id(layer) not in seen:
            verdict.unprobed.append(layer.output)
            verdict.unprobed_dead += int(_true_dead(layer, told_apart).sum())
    verdict.missed_dead += verdict.unprobed_dead
    truth_fraction = {name: float(_true_dead(layer, told_apart).mean()) for name, layer in matched.items()}
    network_fraction = verdict.true_dead / max(sum(layer.units for layer in truth), 1)
    for finding in model.get("findings", []):
        severity, rule = finding.get("severity", "?"), finding.get("rule", "?")
        verdict.severities[severity] += 1
        verdict.rules[f"{rule}:{severity}"] += 1
        if severity not in ("error", "warning"):
            continue
        evidence = finding.get("evidence") or {}
        refuted = False
        if rule in PROBE_LAYER_RULES and finding.get("node") in truth_fraction:
            refuted = truth_fraction[finding["node"]] <= float(evidence.get("threshold", 0.0))
        elif rule == NETWORK_RULE and "warning_fraction" in evidence:
            refuted = network_fraction <= float(evidence["warning_fraction"])
        if refuted:
            verdict.false_findings[severity] += 1
            verdict.false_rules[f"{rule}:{severity}"] += 1
    verdict.notes = [note.get("message", "") for note in model.get("notes", [])]
    return verdict
