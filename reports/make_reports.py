"""Regenerate the example reports in this folder from the models in examples/.

    python reports/make_reports.py            # writes reports/examples.{html,sarif,json}
    python reports/make_reports.py OUT_DIR    # writes them elsewhere (the tests compare the two)

relulint runs as a user runs it (the command line, from the repository root, so paths read
``examples/...``), with the probe on and a fixed seed so that every run measures the same.
tests/test_reports_folder.py checks that the committed reports match a fresh run, apart from
timestamps and version numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
NAMES = ("examples.html", "examples.sarif", "examples.json")
SEED = 0


def models() -> list[str]:
    return sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "examples").glob("*.onnx"))


def command(folder: Path) -> list[str]:
    outputs = []
    for name in NAMES:
        target = folder / name
        shown = target.relative_to(ROOT).as_posix() if target.is_relative_to(ROOT) else str(target)
        outputs += ["-o", shown]
    # --exit-zero: the dying example is meant to fail; --sarif-root: paths relative to this checkout.
    return ["relulint", *models(), "--probe", "--seed", str(SEED), "--sarif-root", ".", "--exit-zero", "--quiet", *outputs]


def make_reports(folder: Path = HERE) -> list[Path]:
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    args = command(folder)
    env = {key: value for key, value in os.environ.items() if key not in ("RELULINT_DEBUG", "GITHUB_STEP_SUMMARY")}
    done = subprocess.run([sys.executable, "-m", "relulint", *args[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"relulint failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return [folder / name for name in NAMES]


if __name__ == "__main__":
    for path in make_reports(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path, path.stat().st_size, "bytes")
