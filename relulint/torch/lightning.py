"""``DeadUnitCallback``: ``DeadUnitMonitor`` for Lightning's ``Trainer`` (needs ``lightning`` installed).

It watches the LightningModule from the start of training to its end, checks at the end of every training
epoch (and every ``every`` training steps when given), and logs each layer's dead fraction as
``relulint/dead_fraction/<layer>`` through ``LightningModule.log``; ``callback.report()`` gives the
monitor's ``Report``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # checked against one of the two packages: they hold the same classes
    from lightning.pytorch import Callback, LightningModule, Trainer
else:
    try:
        from lightning.pytorch import Callback, LightningModule, Trainer
    except ModuleNotFoundError:  # the standalone package of the same code
        from pytorch_lightning import Callback, LightningModule, Trainer

from relulint.torch.monitor import DeadUnitMonitor
from relulint.torch.result import Report


class DeadUnitCallback(Callback):
    def __init__(self, **monitor_options: Any) -> None:
        """``monitor_options`` are ``DeadUnitMonitor``'s keyword arguments (``every``, ``tau``, ...)."""
        super().__init__()
        self.options = monitor_options
        self.monitor: DeadUnitMonitor | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.monitor = DeadUnitMonitor(pl_module, **self.options).__enter__()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.monitor is None:
            return
        for item in self.monitor.epoch_end(trainer.current_epoch):
            pl_module.log(f"relulint/dead_fraction/{item.layer}", item.dead_fraction)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.monitor is not None:
            self.monitor.__exit__(None, None, None)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)

    def report(self) -> Report:
        if self.monitor is None:
            raise RuntimeError("DeadUnitCallback.report(): training has not started")
        return self.monitor.report()
