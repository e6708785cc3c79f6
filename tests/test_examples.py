"""The committed example models are exactly what examples/make_examples.py makes, and small."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("make_examples", ROOT / "examples" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_are_reproducible_and_under_1mb(tmp_path):
    script = load_script()
    script.main(tmp_path)
    made = sorted(p.name for p in tmp_path.glob("*.onnx"))
    committed = sorted(p.name for p in (ROOT / "examples").glob("*.onnx"))
    assert made == committed == sorted(script.EXAMPLES)
    for name in made:
        assert (tmp_path / name).read_bytes() == (ROOT / "examples" / name).read_bytes(), (
            f"rerun make_examples.py: {name}"
        )
    assert sum((ROOT / "examples" / name).stat().st_size for name in committed) < 1_000_000
