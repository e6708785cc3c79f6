"""Nothing from the linted tree is imported (issue 15.1).

Modules named like relulint's dependencies (and like relulint itself) are planted in the working folder
and in the model's folder; each one would leave a marker file if it ran. Both entry points run a lint
with the probe (so the probe's child process starts too), and no marker may appear.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relulint.modelkit import ModelBuilder

PLANTED = ("numpy", "click", "onnx", "onnxruntime", "networkx", "jinja2", "typing_extensions", "relulint")


def plant(folder: Path, markers: Path, names: tuple[str, ...] = PLANTED) -> None:
    """Modules in ``folder`` that write a marker into ``markers`` when imported, then fail loudly."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        code = (
            "import os, pathlib\n"
            f"pathlib.Path({str(markers)!r}, {name!r} + '-' + str(os.getpid())).write_text({str(folder)!r})\n"
            f"raise SystemExit('planted {name} ran')\n"
        )
        (folder / f"{name}.py").write_text(code)
    package = folder / "relulint"
    package.mkdir(exist_ok=True)
    for module in ("__init__.py", "__main__.py", "launch.py", "cli.py"):
        (package / module).write_text((folder / "relulint.py").read_text())


def dying_model(path: Path) -> Path:
    builder = ModelBuilder(seed=3)
    x = builder.input("x", ["N", 8])
    hidden = builder.relu(builder.gemm(x, 8, 16, bias=[-50.0] * 16, name="fc1"), "act1")
    import onnx

    onnx.save(builder.build([builder.gemm(hidden, 16, 2, name="head")]), path)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    markers = tmp_path / "markers"
    markers.mkdir()
    work, models = tmp_path / "work", tmp_path / "models"
    plant(work, markers)
    plant(models, markers)
    return {"markers": markers, "work": work, "model": dying_model(models / "model.onnx")}


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RELULINT_DEBUG", "PYTHONSAFEPATH")}
    env.update(extra)
    return env


def run(command: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=environment(**extra), capture_output=True, text=True, timeout=300)


def assert_linted_and_clean(done: subprocess.CompletedProcess[str], tree: dict[str, Path], report: Path) -> None:
    ran = sorted(p.name for p in tree["markers"].iterdir())
    assert not ran, f"planted modules ran: {ran}\n{done.stderr}"
    assert done.returncode == 1, done.stdout + done.stderr  # fc1 is biased far below zero: findings
    model = json.loads(report.read_text())["models"][0]
    assert model["probe"] is not None and model["probe"]["samples"] > 0, model["notes"]  # the child ran


def test_the_bait_works(tree):
    """Without isolation the planted modules do run: the checks below could fail."""
    done = run([sys.executable, "-c", "import numpy"], cwd=tree["work"])
    assert done.returncode != 0 and "planted numpy ran" in done.stderr
    assert [p.name.split("-")[0] for p in tree["markers"].iterdir()] == ["numpy"]


def relulint_command() -> Path:
    script = Path(sys.executable).parent / "relulint"
    if not script.exists():
        pytest.skip("the relulint command is not installed beside this interpreter")
    return script


def unplant_relulint(folder: Path) -> None:
    (folder / "relulint.py").unlink()
    for file in (folder / "relulint").iterdir():
        file.unlink()
    (folder / "relulint").rmdir()


def test_relulint_command_imports_nothing_from_the_working_or_model_folder(tree):
    report = tree["work"] / "report.json"
    done = run([str(relulint_command()), str(tree["model"]), "-o", str(report)], cwd=tree["work"])
    assert_linted_and_clean(done, tree, report)


def test_relulint_command_with_the_working_folder_on_pythonpath(tree):
    # PYTHONPATH=. as some users have it set. Python then finds relulint itself there before any code of
    # relulint runs (that is what the variable asks for), but no dependency is taken from there.
    unplant_relulint(tree["work"])
    report = tree["work"] / "report.json"
    command = [str(relulint_command()), str(tree["model"]), "-o", str(report)]
    done = run(command, cwd=tree["work"], PYTHONPATH=".")
    assert_linted_and_clean(done, tree, report)


def test_python_m_relulint_imports_nothing_from_the_working_or_model_folder(tree):
    # `python -m relulint` finds relulint itself by Python's rule (the working folder first), so here
    # the working folder holds only the dependencies' names; the model's folder holds relulint too.
    unplant_relulint(tree["work"])
    report = tree["work"] / "report.json"
    done = run([sys.executable, "-m", "relulint", str(tree["model"]), "-o", str(report)], cwd=tree["work"])
    assert_linted_and_clean(done, tree, report)


def test_python_safe_path_m_relulint_ignores_a_planted_relulint(tree):
    report = tree["work"] / "report.json"
    done = run([sys.executable, "-P", "-m", "relulint", str(tree["model"]), "-o", str(report)], cwd=tree["work"])
    assert_linted_and_clean(done, tree, report)


def test_probe_child_ignores_the_working_folder_and_python_variables(tree, monkeypatch):
    """The child alone, as the runner starts it, from a planted folder with PYTHONPATH and PYTHONSTARTUP set."""
    from relulint.probe.runner import child_command

    monkeypatch.chdir(tree["work"])
    command = child_command()
    probe = "import relulint.probe.worker, onnxruntime, numpy, sys; print(sys.modules['numpy'].__file__)"
    command[3] = command[3].replace("from relulint.probe.worker import main\nmain()", probe)
    startup = tree["work"] / "startup.py"
    startup.write_text((tree["work"] / "numpy.py").read_text())
    done = run(command, cwd=tree["work"], PYTHONPATH=str(tree["work"]), PYTHONSTARTUP=str(startup))
    assert done.returncode == 0, done.stderr
    assert not list(tree["markers"].iterdir())
    assert not done.stdout.strip().startswith(str(tree["work"]))


def test_safe_path_drops_only_the_working_folder(tmp_path, monkeypatch):
    from relulint.isolation import safe_path

    monkeypatch.chdir(tmp_path)
    other = str(tmp_path / "site-packages")
    assert safe_path(["", ".", str(tmp_path), other, str(tmp_path / "." / "")]) == [other]
