"""``relulint model.pt2``: refused with one line, and nothing in the file runs (torch.export.load unpickles)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path


class _Plant:
    """Unpickling this creates a file: the proof that code from the archive ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def relulint(*args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "RELULINT_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "relulint", *args], capture_output=True, text=True, env=environment, timeout=120
    )


def test_a_pt2_program_is_refused_without_running_its_pickles(tmp_path):
    marker = tmp_path / "ran"
    archive = tmp_path / "model.pt2"
    with zipfile.ZipFile(archive, "w") as pt2:  # the layout torch.export.save writes, with a planted pickle
        pt2.writestr("model/archive_format", "pt2")
        pt2.writestr("model/data/weights/model.pkl", pickle.dumps(_Plant(marker)))
    done = relulint(str(archive))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"relulint: error: {archive}: a torch.export program (.pt2)")
    assert "pickle" in lines[0]
    assert not marker.exists()


def test_a_real_exported_program_is_refused_too(tmp_path):
    import pytest

    torch = pytest.importorskip("torch")
    program = torch.export.export(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()), (torch.randn(2, 3),))
    torch.export.save(program, tmp_path / "net.pt2")
    done = relulint(str(tmp_path / "net.pt2"))
    assert done.returncode == 2
    assert "net.pt2: a torch.export program (.pt2) is loaded with pickle" in done.stderr
