"""``DeadUnitMonitor``: count, while a module trains, how often each ReLU unit is positive.

Per ReLU-family activation, nn.ReLU/ReLU6 modules through forward hooks and functional ``torch.relu`` /
``F.relu`` / ``F.relu6`` calls through a ``TorchFunctionMode`` (hooks do not see those), each forward adds
two on-device reductions per unit to a running total: how many values were positive and their sum. No
activation is kept and nothing leaves the device until a check. A check (every ``every`` training
forwards, or at ``epoch_end()``) turns the totals into the dead and rarely-active fractions per layer, the
tau-dormant fraction of ReDo (Sokar et al., 2023: a unit whose mean activation is at most tau times its
layer's mean), and the relative weight update of each Conv/Linear since the previous check (RL702's
signal); it warns when a layer crosses RL501's or RL502's threshold, keeps one small record per check,
and starts the next window. ``report()`` gives a ``Report`` with RL501-RL503 findings for the last window,
RL701 findings for units that died since an earlier check and RL702 findings for outsized updates.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections import deque
from collections.abc import Callable, Collection
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from relulint.config import Config
from relulint.findings import AffectedUnits, Finding, ModelResult, Note, Severity
from relulint.probe.result import RARE
from relulint.report import Run
from relulint.rules import rule_by_id
from relulint.torch.result import Report
from relulint.torch.source import definition_site, shown_file
from relulint.torch.windows import LayerCheck, LayerTotals, unit_axis

log = logging.getLogger("relulint.torch")

ACTIVATION_MODULES = (torch.nn.ReLU, torch.nn.ReLU6)
FUNCTIONS = {torch.relu, torch.relu_, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.relu_}
TORCH_ROOT = str(Path(torch.__file__).resolve().parent)
PARAMETERIZED = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)


def _option(rule_id: str, name: str) -> Any:
    """A rule's default option, read from the rule itself so the monitor and the linter agree."""
    rule = rule_by_id(rule_id)
    assert rule is not None, rule_id
    return rule.meta.defaults()[name]


class DeadUnitWarning(UserWarning):
    """A layer's dead fraction crossed RL501's or RL502's threshold during training."""

    def __init__(self, message: str, check: LayerCheck) -> None:
        super().__init__(message)
        self.check = check


def _caller_level() -> int:
    """The ``stacklevel`` that makes a warning point at the first frame outside relulint.torch and torch."""
    own = str(Path(__file__).resolve().parent)
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and (frame.f_code.co_filename.startswith((own, TORCH_ROOT))):
        frame, level = frame.f_back, level + 1
    return level


class _FunctionalReLUs(TorchFunctionMode):
    def __init__(self, monitor: DeadUnitMonitor) -> None:
        super().__init__()
        self.monitor = monitor

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Collection[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        result = func(*args, **(kwargs or {}))
        if func in FUNCTIONS and not self.monitor._inside and isinstance(result, torch.Tensor):
            self.monitor._functional(args[0] if args else None, result)
        return result


class DeadUnitMonitor:
    """Watch a module's ReLU units while it trains; see the module docstring.

    ``every``: check every N training forwards of ``module`` (``None``: only at ``epoch_end()`` and
    ``check()``). ``error_fraction``/``warning_fraction``: the dead fractions that warn (default: RL501's
    and RL502's own defaults). ``tau``: ReDo's dormancy threshold. ``functional``: also track functional
    calls (needs the monitor entered as a context manager, around the training loop). ``history``: how many
    checks to remember (``None``: all; each check is one small record per layer).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        every: int | None = None,
        error_fraction: float | None = None,
        warning_fraction: float | None = None,
        rare: float = RARE,
        tau: float = 0.1,
        functional: bool = True,
        history: int | None = None,
        name: str | None = None,
    ) -> None:
        if every is not None and every < 1:
            raise ValueError("every must be a positive number of training steps, or None")
        self.module = module
        self.every = every
        self.error_fraction = _option("RL501", "error_fraction") if error_fraction is None else error_fraction
        self.warning_fraction = _option("RL502", "warning_fraction") if warning_fraction is None else warning_fraction
        self.rare = rare
        self.tau = tau
        self.name = name or type(module).__name__
        self.history: deque[list[LayerCheck]] = deque(maxlen=history)
        self.step = 0
        self.epoch: int | None = None
        self.updates: dict[str, float] = {}  # module -> relative weight update between the last two checks
        self._layers: dict[str, LayerTotals] = {}
        self._names = {id(m): n for n, m in module.named_modules()}
        self._inside = 0
        self._level: dict[str, int] = {}  # layer -> 0 fine, 1 above warning, 2 above error (at the last check)
        self._weights = self._weight_copies()
        self._handles: list[Any] = []
        self._mode = _FunctionalReLUs(self) if functional else None
        self.attach()

    # ---- wiring ---------------------------------------------------------------------------------
    def attach(self) -> None:
        if self._handles:
            return
        for qualified, submodule in self.module.named_modules():
            if isinstance(submodule, ACTIVATION_MODULES):
                self._handles.append(submodule.register_forward_pre_hook(self._enter))
                self._handles.append(submodule.register_forward_hook(self._hook(qualified)))
        self._handles.append(self.module.register_forward_hook(self._counted))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> DeadUnitMonitor:
        self.attach()
        if self._mode is not None:
            self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._mode is not None:
            self._mode.__exit__(*exc)
        self.detach()

    def _enter(self, module: torch.nn.Module, inputs: tuple[Any, ...]) -> None:
        self._inside += 1  # nn.ReLU calls F.relu: counted once, by its hook

    def _hook(self, qualified: str) -> Callable[[torch.nn.Module, tuple[Any, ...], torch.Tensor], None]:
        def hook(module: torch.nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            self._inside -= 1
            if module.training and isinstance(output, torch.Tensor):
                self._record(qualified, qualified, inputs[0] if inputs else None, output)

        return hook

    def _functional(self, pre_activation: Any, output: torch.Tensor) -> None:
        if not self.module.training:
            return
        owner, site = self._caller()
        if owner is None:
            return  # a relu outside the monitored module
        line = f"@{site[1]}" if site else ""
        self._record(f"{owner + '.' if owner else ''}relu{line}", owner, pre_activation, output, site)

    def _caller(self) -> tuple[str | None, tuple[str, int] | None]:
        """The monitored module whose forward made this call, and the call's file and line."""
        frame: FrameType | None = sys._getframe(2)
        site = None
        while frame is not None:
            file = frame.f_code.co_filename
            if not file.startswith(TORCH_ROOT) and not file.startswith(__file__.rsplit("/", 1)[0]):
                site = site or (file, frame.f_lineno)
                owner = frame.f_locals.get("self")
                if id(owner) in self._names:
                    return self._names[id(owner)], site
            frame = frame.f_back
        return None, site

    def _record(
        self,
        key: str,
        owner: str,
        pre_activation: Any,
        output: torch.Tensor,
        site: tuple[str, int] | None = None,
    ) -> None:
        layer = self._layers.get(key)
        if layer is None:
            axis = unit_axis(pre_activation if isinstance(pre_activation, torch.Tensor) else None, output)
            layer = LayerTotals(key, owner, site or definition_site(self.module, owner), axis)
            self._layers[key] = layer
        with torch.no_grad(), torch._C.DisableTorchFunction():  # the monitor's own ops skip its mode
            layer.add(output)

    def _counted(self, module: torch.nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not module.training:
            return
        self.step += 1
        if self.every is not None and self.step % self.every == 0:
            self.check()

    # ---- checks ---------------------------------------------------------------------------------
    def epoch_end(self, epoch: int | None = None) -> list[LayerCheck]:
        """Check at the end of an epoch (call it from the training loop)."""
        self.epoch = epoch if epoch is not None else (self.epoch + 1 if self.epoch is not None else 0)
        return self.check()

    def check(self) -> list[LayerCheck]:
        """Judge the window since the last check, warn on crossings, remember it and start a new window."""
        # Called from a training loop inside the monitor's function mode: its own ops skip the mode (through
        # it, torch kept a few small objects per call, and memory grew with the checks).
        with torch.no_grad(), torch._C.DisableTorchFunction():
            judged = [layer.judge(self.step, self.epoch, self.tau, self.rare) for layer in self._layers.values()]
            checks = [item for item in judged if item is not None]
            self.updates = self._relative_updates()
        for item in checks:
            self._warn_on_crossing(item)
        if checks:
            self.history.append(checks)
        return checks

    def _warn_on_crossing(self, item: LayerCheck) -> None:
        fraction = item.dead_fraction
        level = 2 if fraction > self.error_fraction else (1 if fraction > self.warning_fraction else 0)
        before = self._level.get(item.layer, 0)
        self._level[item.layer] = level
        if level <= before:
            return
        rule, bound = ("RL501", self.error_fraction) if level == 2 else ("RL502", self.warning_fraction)
        when = f"epoch {item.epoch}, " if item.epoch is not None else ""
        message = (
            f"{self.name}: {item.layer} [{rule}]: {item.dead} of {item.units} units ({fraction:.1%}) never positive "
            f"on the last {item.samples:,} training samples ({when}step {item.step}), above {bound:.0%}"
        )
        log.warning(message)
        warnings.warn(DeadUnitWarning(message, item), stacklevel=_caller_level())

    def _weight_copies(self) -> dict[str, torch.Tensor]:
        return {
            name: submodule.weight.detach().clone()
            for name, submodule in self.module.named_modules()
            if isinstance(submodule, PARAMETERIZED) and isinstance(getattr(submodule, "weight", None), torch.Tensor)
        }

    def _relative_updates(self) -> dict[str, float]:
        now = self._weight_copies()
        updates = {}
        for name, weight in now.items():
            old = self._weights.get(name)
            if old is not None and old.shape == weight.shape:
                norm = float(torch.linalg.vector_norm(old))
                if norm > 0:
                    updates[name] = float(torch.linalg.vector_norm(weight - old)) / norm
        self._weights = now
        return updates

    # ---- reading it ---------------------------------------------------------------------------
    def counts(self) -> dict[str, np.ndarray]:
        """Per layer, each unit's positive count in the last checked window."""
        return {name: layer.last_positive for name, layer in self._layers.items() if layer.last_positive is not None}

    def report(self) -> Report:
        """RL501/RL502/RL503 for the last check, RL701 for units dead since an earlier check, RL702 for updates."""
        if not self.history:
            self.check()
        latest = {item.layer: item for item in self.history[-1]} if self.history else {}
        findings: list[Finding] = []
        for item in latest.values():
            findings.extend(self._layer_findings(item))
        findings.extend(self._update_findings())
        dead = sum(item.dead for item in latest.values())
        units = sum(item.units for item in latest.values())
        if units:
            fraction = dead / units
            severity = Severity.WARNING if fraction > _option("RL503", "warning_fraction") else Severity.NOTE
            findings.insert(
                0,
                Finding(
                    rule="RL503",
                    severity=severity,
                    message=f"{dead} of {units} units ({fraction:.1%}) in {len(latest)} layers were never positive "
                    f"in the last window of training",
                    units=AffectedUnits(dead, units),
                    evidence={"dead": dead, "units": units, "fraction": fraction, "inputs": "training"},
                ),
            )
        notes = []
        if not latest:
            notes.append(Note("skipped", "no training forward reached a ReLU the monitor tracks; nothing was measured"))
        result = ModelResult(
            path=self.name,
            findings=findings,
            notes=notes,
            layers=[self._layer_record(item) for item in latest.values()],
            info={"steps": self.step, "epoch": self.epoch, "checks": len(self.history)},
        )
        run = Run(results=[result], config=Config())
        return Report(run=run, fallback_source=definition_site(self.module, ""))

    def _where(self, item: LayerCheck) -> dict[str, Any]:
        layer = self._layers[item.layer]
        evidence: dict[str, Any] = {"module": layer.module, "inputs": "training", "step": item.step}
        if item.epoch is not None:
            evidence["epoch"] = item.epoch
        if layer.source is not None:
            evidence["source"] = {"file": shown_file(layer.source[0]), "line": layer.source[1]}
        return evidence

    def _layer_findings(self, item: LayerCheck) -> list[Finding]:
        found = []
        fraction = item.dead_fraction
        layer = self._layers[item.layer]
        positive = layer.last_positive if layer.last_positive is not None else np.zeros(0)
        dead_units = tuple(int(i) for i in np.flatnonzero(positive == 0)[:5])
        evidence = {
            **self._where(item),
            "dead": item.dead,
            "rarely_active": item.rarely_active,
            "dormant": item.dormant,
            "tau": self.tau,
            "samples": item.samples,
        }
        said = (
            f"{item.dead} of {item.units} units ({fraction:.1%}) never output a positive value on the last "
            f"{item.samples:,} training samples ({item.values:,} values per unit); {item.dormant} are "
            f"{self.tau:g}-dormant (ReDo)"
        )
        if fraction > self.error_fraction:
            found.append(
                Finding(
                    "RL501",
                    Severity.ERROR,
                    said,
                    item.layer,
                    None,
                    AffectedUnits(item.dead, item.units, dead_units),
                    evidence,
                )
            )
        elif fraction > self.warning_fraction:
            found.append(
                Finding(
                    "RL502",
                    Severity.WARNING,
                    said,
                    item.layer,
                    None,
                    AffectedUnits(item.dead, item.units, dead_units),
                    evidence,
                )
            )
        died = self._died_since(layer)
        if died is not None:
            count, since = died
            found.append(
                Finding(
                    "RL701",
                    Severity.ERROR if count / item.units > self.error_fraction else Severity.WARNING,
                    f"{count} of {item.units} units died during training: alive at the first check (step "
                    f"{self.history[0][0].step}), dead at every check from step {since} on (last: step {item.step})",
                    item.layer,
                    None,
                    AffectedUnits(count, item.units),
                    {**self._where(item), "died_since_step": since},
                )
            )
        return found

    def _died_since(self, layer: LayerTotals) -> tuple[int, int] | None:
        """Units dead at the last check that were alive at the first: how many, and from which step on."""
        if layer.dead_since is None or len(self.history) < 2:
            return None
        first_step = self.history[0][0].step
        died = (layer.dead_since > first_step) & (layer.dead_since >= 0)
        count = int(died.sum())
        minimum = _option("RL701", "min_fraction")
        if count == 0 or count / layer.dead_since.size < minimum:
            return None
        return count, int(layer.dead_since[died].min())

    def _update_findings(self) -> list[Finding]:
        bound = _option("RL702", "max_update")
        found = []
        for name, update in self.updates.items():
            if update > bound:
                site = definition_site(self.module, name)
                evidence: dict[str, Any] = {"module": name, "relative_update": update, "max_update": bound}
                if site is not None:
                    evidence["source"] = {"file": shown_file(site[0]), "line": site[1]}
                found.append(
                    Finding(
                        "RL702",
                        Severity.WARNING,
                        f"its weights moved by {update:.2f}× their norm between the last two checks "
                        f"(‖ΔW‖/‖W‖ above {bound:g}): the signature of a learning rate that is too high",
                        name,
                        None,
                        None,
                        evidence,
                    )
                )
        return found

    def _layer_record(self, item: LayerCheck) -> dict[str, Any]:
        layer = self._layers[item.layer]
        return {
            "name": item.layer,
            "module": layer.module,
            "activation_op": "Relu",
            "family": "plain",
            "units": item.units,
            "metrics": {
                "dead": item.dead,
                "dead_fraction": item.dead_fraction,
                "rarely_active": item.rarely_active,
                "dormant": item.dormant,
                "samples": item.samples,
            },
        }
