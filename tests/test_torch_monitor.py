"""relulint.torch.DeadUnitMonitor: exact counts during training, warnings when a layer crosses RL501/RL502."""

from __future__ import annotations

import gc
import inspect
import tracemalloc
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny models: threads cost more than they save, and the machine is shared
nn = torch.nn
F = torch.nn.functional

from relulint.rules import rule_by_id  # noqa: E402
from relulint.torch import DeadUnitMonitor, DeadUnitWarning  # noqa: E402


class SmallCNN(nn.Module):
    """Functional ReLUs only: module hooks alone would see none of them."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.mean((2, 3)))


class Mixed(nn.Module):
    """An nn.ReLU module (counted once, although it calls F.relu inside) and a functional relu."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 12)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(12, 10)
        self.fc3 = nn.Linear(10, 1)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(self.act(self.fc1(x)))))


def line_of(cls: type, text: str) -> int:
    lines, first = inspect.getsourcelines(cls)
    return first + next(i for i, line in enumerate(lines) if text in line)


def task(samples=512):
    torch.manual_seed(0)
    images = torch.randn(samples, 1, 16, 16)
    labels = (images[:, :, :8].mean((1, 2, 3)) > images[:, :, 8:].mean((1, 2, 3))).long()
    return images, labels


def train(lr, epochs=4):
    images, labels = task()
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    with warnings.catch_warnings(record=True) as caught, DeadUnitMonitor(model) as monitor:
        warnings.simplefilter("always")
        for epoch in range(epochs):
            for start in range(0, len(images), 32):
                optimizer.zero_grad()
                F.cross_entropy(model(images[start : start + 32]), labels[start : start + 32]).backward()
                optimizer.step()
            monitor.epoch_end(epoch)
    return monitor, [w.message for w in caught if issubclass(w.category, DeadUnitWarning)]


def test_a_too_high_learning_rate_warns_in_the_epoch_a_layer_crosses_40_percent():
    monitor, warned = train(lr=3.0)
    bound = rule_by_id("RL501").meta.defaults()["error_fraction"]
    assert monitor.error_fraction == bound == 0.4
    crossing = {}
    for checks in monitor.history:
        for item in checks:
            if item.dead_fraction > bound:
                crossing.setdefault(item.layer, item.epoch)
    assert crossing, "the run was meant to kill a layer"
    errors = [w for w in warned if "[RL501]" in str(w)]
    assert {w.check.layer: w.check.epoch for w in errors} == crossing
    assert all(epoch > 0 for epoch in crossing.values())  # alive after the first epoch, dead later
    assert len(errors) == len(crossing)  # once per crossing, not at every check
    report = monitor.report()
    rules = {(f.rule, f.node) for f in report.findings}
    for layer in crossing:
        assert ("RL501", layer) in rules
        assert ("RL701", layer) in rules  # died since an earlier check
    finding = next(f for f in report.findings if f.rule == "RL701")
    assert finding.evidence["died_since_step"] > 0
    assert "RL501" in report.render("json")


def test_a_sane_learning_rate_stays_quiet():
    monitor, warned = train(lr=0.05)
    assert warned == []
    assert not [f for f in monitor.report().findings if f.severity >= 2]
    calls = {f"relu@{line_of(SmallCNN, 'F.relu(self.conv1')}", f"relu@{line_of(SmallCNN, 'torch.relu(self.conv2')}"}
    assert {item.layer for item in monitor.history[-1]} == calls  # the two functional calls


def direct_counts(model: Mixed, batches) -> dict[str, np.ndarray]:
    """Positive counts per unit computed with plain hooks on the layers before each ReLU."""
    seen = {"act": [], "fc2": []}
    handles = [
        model.act.register_forward_hook(lambda m, i, o: seen["act"].append((o > 0).sum(0))),
        model.fc2.register_forward_hook(lambda m, i, o: seen["fc2"].append((torch.relu(o) > 0).sum(0))),
    ]
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for handle in handles:
        handle.remove()
    return {name: torch.stack(parts).sum(0).numpy() for name, parts in seen.items()}


def test_counts_equal_a_direct_computation_over_the_same_batches():
    torch.manual_seed(1)
    model = Mixed()
    with torch.no_grad():
        model.fc1.bias[:5] = -4.0  # some dead, some rarely active
        model.fc2.bias[:3] = -3.0
    batches = [torch.randn(16, 6) for _ in range(7)]
    with DeadUnitMonitor(model) as monitor:
        for batch in batches:
            model(batch)
        monitor.check()
    counts = monitor.counts()
    expected = direct_counts(model, batches)
    functional = next(name for name in counts if name != "act")
    assert functional == f"relu@{line_of(Mixed, 'F.relu(self.fc2')}"
    np.testing.assert_array_equal(counts["act"], expected["act"])
    np.testing.assert_array_equal(counts[functional], expected["fc2"])
    item = {i.layer: i for i in monitor.history[-1]}["act"]
    assert item.samples == 16 * 7 and item.dead == int((expected["act"] == 0).sum()) > 0


def test_eval_forwards_are_not_counted_and_hooks_go_away():
    model = Mixed()
    with DeadUnitMonitor(model, functional=False) as monitor:
        model.eval()
        model(torch.randn(4, 6))
        model.train()
        model(torch.randn(4, 6))
    assert monitor.step == 1
    assert list(monitor.check()[0:1])[0].samples == 4
    assert not model.act._forward_hooks and not model._forward_hooks
    assert {i.layer for i in monitor.history[-1]} == {"act"}  # functional=False: the module only


def test_relative_weight_updates_between_checks_give_rl702():
    model = Mixed()
    monitor = DeadUnitMonitor(model, functional=False)
    model(torch.randn(4, 6))
    monitor.check()
    with torch.no_grad():
        model.fc2.weight.mul_(3.0)  # moved by 2x its norm
    model(torch.randn(4, 6))
    monitor.check()
    assert monitor.updates["fc2"] == pytest.approx(2.0, rel=1e-5)
    assert monitor.updates["fc1"] == 0.0
    assert [f.node for f in monitor.report().findings if f.rule == "RL702"] == ["fc2"]


def monitor_memory(steps: int, every: int | None, history: int | None) -> int:
    """Bytes still allocated by the monitor's own code after ``steps`` training forwards."""
    torch.manual_seed(0)
    model = Mixed()
    batch = torch.randn(4, 6)
    gc.collect()
    tracemalloc.start()
    with DeadUnitMonitor(model, every=every, history=history) as monitor:
        for _ in range(steps):
            model(batch)
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert monitor.step == steps
    mine = snapshot.filter_traces([tracemalloc.Filter(True, "*relulint/torch/*")])
    return sum(stat.size for stat in mine.statistics("filename"))


@pytest.mark.filterwarnings("ignore::relulint.torch.DeadUnitWarning")  # Python's registry of shown warnings is not ours
def test_memory_does_not_grow_with_steps():
    assert monitor_memory(200, every=None, history=None) <= monitor_memory(20, every=None, history=None) + 2048
    assert monitor_memory(200, every=5, history=3) <= monitor_memory(20, every=5, history=3) + 2048
