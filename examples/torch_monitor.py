"""relulint.torch in a plain training loop: lint the model before training, watch it while it trains.

    pip install 'relulint[torch]' && python examples/torch_monitor.py [--lr 3.0]

A small CNN learns a synthetic task (which half of a noise image is brighter). At the default learning rate
its units stay alive; at ``--lr 3.0`` one large step kills most of conv2's channels in the second epoch,
and the monitor says so in that epoch (a ``DeadUnitWarning`` and a log line), then ``report()`` lists what
died and since when. ``check()`` before training runs relulint's static rules and probe on the module.
"""

from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F
from torch import nn

from relulint.torch import DeadUnitMonitor, check


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.mean((2, 3)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=4)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    torch.manual_seed(0)
    images = torch.randn(512, 1, 16, 16)
    labels = (images[:, :, :8].mean((1, 2, 3)) > images[:, :, 8:].mean((1, 2, 3))).long()
    model = SmallCNN()

    print("== relulint.torch.check before training (real samples: the training images)")
    print(check(model, images[:1], data=images))

    optimizer = torch.optim.SGD(model.parameters(), lr=arguments.lr)
    print(f"== training at lr {arguments.lr}")
    with DeadUnitMonitor(model) as monitor:
        for epoch in range(arguments.epochs):
            for start in range(0, len(images), 32):
                optimizer.zero_grad()
                loss = F.cross_entropy(model(images[start : start + 32]), labels[start : start + 32])
                loss.backward()
                optimizer.step()
            checks = monitor.epoch_end(epoch)
            dead = ", ".join(f"{item.layer} {item.dead}/{item.units} dead" for item in checks)
            print(f"epoch {epoch}: loss {loss.item():.3f}; {dead}")
    print("== monitor.report()")
    print(monitor.report())


if __name__ == "__main__":
    main()
