"""What relulint.torch costs: the monitor per CPU training step, check() against torch.onnx.export alone.

    python bench/torch_bench.py [--steps 60] [--rounds 5] [--threads 1] [--dynamo]

Every figure is a median over rounds that alternate the variants (so drift in a shared machine's load
hits them alike) and is printed with its ratio to the floor measured in the same run:

- a training step of a small CNN (3 Conv+BN+ReLU blocks, 16x16 inputs, batch 32, SGD), bare: the floor;
  with ``DeadUnitMonitor`` (module hooks and the function mode, no check / a check every 20 steps; module
  hooks only, ``functional=False``, which leaves the functional ReLU untracked); with naive
  hooks that copy each activation's per-unit positive counts to numpy at every step (what the monitor
  avoids by keeping its totals on the device until a check).
- ``check(model, x)`` with and without the probe, against ``torch.onnx.export`` of the same module to
  memory (TorchScript exporter, as check() uses by default; ``--dynamo`` adds the dynamo exporter).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from relulint.torch import DeadUnitMonitor, check  # noqa: E402

BATCH = 32


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.block1(x), 2)
        x = F.max_pool2d(self.block2(x), 2)
        x = F.relu(self.bn3(self.conv3(x)))  # a functional ReLU: only the function mode sees it
        return self.fc(x.mean((2, 3)))


def naive_hooks(model: nn.Module) -> list:
    """Per-unit positive counts copied to numpy after every forward: the obvious way, and a slow one."""
    totals: dict[str, object] = {}

    def hook(name: str):
        def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            counts = (output.detach() > 0).sum(dim=(0, 2, 3)).cpu().numpy()  # a sync and a copy per call
            totals[name] = totals[name] + counts if name in totals else counts

        return count

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    handles.append(model.bn3.register_forward_hook(lambda m, i, o: hook("relu3")(m, i, F.relu(o))))
    return handles


def training_steps(variant: str, steps: int) -> float:
    """Median seconds per training step of one variant (after two warm-up steps)."""
    torch.manual_seed(0)
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(BATCH, 3, 16, 16), torch.randint(0, 10, (BATCH,))
    handles: list = []
    monitor = None
    if variant == "naive hooks":
        handles = naive_hooks(model)
    elif variant.startswith("monitor"):
        every = 20 if "every" in variant else None
        monitor = DeadUnitMonitor(model, every=every, functional="hooks only" not in variant).__enter__()
    times = []
    try:
        for _ in range(steps + 2):
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
    finally:
        for handle in handles:
            handle.remove()
        if monitor is not None:
            monitor.__exit__(None, None, None)
    return statistics.median(times[2:])


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def export_only(model: nn.Module, example: torch.Tensor, dynamo: bool) -> None:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (example,), dynamo=True, optimize=False)
        else:
            torch.onnx.export(model, (example,), io.BytesIO(), dynamo=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per round and variant")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--dynamo", action="store_true", help="also time the dynamo exporter (slow)")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    warnings.simplefilter("ignore")  # DeadUnitWarning on a random model is not what is measured

    print(f"torch {torch.__version__}, {arguments.threads} thread(s), batch {BATCH}, 16x16, CPU")
    variants = ["bare", "monitor", "monitor, check every 20", "monitor, hooks only", "naive hooks"]
    samples: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(arguments.rounds):
        for variant in variants:
            samples[variant].append(training_steps(variant, arguments.steps))
    floor = statistics.median(samples["bare"])
    print(f"\ntraining step ({arguments.steps} steps x {arguments.rounds} rounds, median)")
    for variant in variants:
        value = statistics.median(samples[variant])
        print(f"  {variant:<26} {value * 1000:8.2f} ms   {value / floor:5.2f}x the bare step")

    torch.manual_seed(0)
    model = SmallCNN()
    example = torch.randn(8, 3, 16, 16)
    rows: dict[str, Callable[[], object]] = {
        "torch.onnx.export (TorchScript)": lambda: export_only(model, example, dynamo=False),
        "check(), static rules only": lambda: check(model, example, probe=False),
        "check(), with the probe": lambda: check(model, example),
    }
    if arguments.dynamo:
        rows["torch.onnx.export (dynamo)"] = lambda: export_only(model, example, dynamo=True)
        rows["check(exporter='dynamo')"] = lambda: check(model, example, exporter="dynamo")
    for work in rows.values():
        work()  # warm-up: first-call imports and caches
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(arguments.rounds):
        for name, work in rows.items():
            times[name].append(timed(work))
    print(f"\ncheck() ({arguments.rounds} rounds, median)")
    floors = {"TorchScript": statistics.median(times["torch.onnx.export (TorchScript)"])}
    if arguments.dynamo:
        floors["dynamo"] = statistics.median(times["torch.onnx.export (dynamo)"])
    for name, values in times.items():
        value = statistics.median(values)
        base = "dynamo" if "dynamo" in name else "TorchScript"
        print(f"  {name:<32} {value:7.3f} s   {value / floors[base]:6.1f}x torch.onnx.export ({base})")


if __name__ == "__main__":
    main()
