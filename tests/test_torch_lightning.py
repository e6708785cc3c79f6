"""relulint.torch.lightning.DeadUnitCallback in a real Trainer (skipped without lightning)."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

import lightning.pytorch as pl  # noqa: E402

from relulint.torch import DeadUnitWarning  # noqa: E402
from relulint.torch.lightning import DeadUnitCallback  # noqa: E402


class Regressor(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(4, 10)
        self.act = torch.nn.ReLU()
        self.out = torch.nn.Linear(10, 1)
        with torch.no_grad():
            self.hidden.bias[:6] = -50.0  # 6 of 10 units dead from the start

    def forward(self, x):
        return self.out(self.act(self.hidden(x)))

    def training_step(self, batch, index):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_the_callback_checks_every_epoch_and_warns():
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    callback = DeadUnitCallback()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Regressor(), loader)
    dead_warnings = [w.message for w in caught if issubclass(w.category, DeadUnitWarning)]
    assert [(w.check.layer, w.check.epoch, w.check.dead) for w in dead_warnings] == [("act", 0, 6)]
    assert [[(i.layer, i.dead, i.samples) for i in checks] for checks in callback.monitor.history] == [
        [("act", 6, 64)],
        [("act", 6, 64)],
    ]
    assert trainer.callback_metrics["relulint/dead_fraction/act"] == pytest.approx(0.6)
    assert ("RL501", "act") in {(f.rule, f.node) for f in callback.report().findings}
    assert not trainer.lightning_module.act._forward_hooks  # detached at the end of training
