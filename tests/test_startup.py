"""Start-up cost (issue 17): processes import only what they need.

``--version``, ``--help``, ``--list-rules`` and ``--explain`` never parse a model: neither onnx (which pulls
in ml_dtypes and protobuf) nor onnxruntime may be imported. The probe's child imports onnxruntime but not
onnx. Checked in fresh processes through the modules they hold at exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# What a real import of onnx always brings (relulint.lazy registers "onnx" itself as a not-yet-run module).
HEAVY = ("onnx.onnx_ml_pb2", "onnx.helper", "ml_dtypes", "onnxruntime", "google.protobuf")

REPORT_MODULES = """
import atexit, json, os, sys
def report():
    with open(os.environ["MODULES_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)
atexit.register(report)
"""


def modules_after(tmp_path, code: str) -> set[str]:
    out = tmp_path / "modules.json"
    env = {**os.environ, "MODULES_OUT": str(out)}
    done = subprocess.run([sys.executable, "-c", REPORT_MODULES + code], env=env, capture_output=True, text=True)
    assert out.exists(), done.stderr
    return set(json.loads(out.read_text()))


@pytest.mark.parametrize("arguments", [["--version"], ["--help"], ["--list-rules"], ["--explain", "RL201"]])
def test_informational_commands_import_neither_onnx_nor_onnxruntime(tmp_path, arguments):
    code = f"import sys\nsys.argv = ['relulint', *{arguments!r}]\nfrom relulint.launch import main\nmain()\n"
    loaded = modules_after(tmp_path, code)
    assert "relulint.launch" in loaded and (arguments == ["--version"] or "relulint.cli" in loaded)  # it ran
    assert not [m for m in loaded if m.startswith(HEAVY)], sorted(m for m in loaded if m.startswith(HEAVY))


def test_version_answers_as_click_does(tmp_path):
    done = subprocess.run([sys.executable, "-m", "relulint", "--version"], capture_output=True, text=True)
    from relulint import __version__

    assert (done.returncode, done.stdout, done.stderr) == (0, f"relulint, version {__version__}\n", "")


def test_linting_a_model_does_import_onnx(tmp_path):
    """The check above can fail: a run that parses a model shows what onnx brings."""
    import onnx

    from relulint.modelkit import ModelBuilder

    b = ModelBuilder(seed=0)
    x = b.input("x", [1, 4])
    onnx.save(b.build([b.relu(b.gemm(x, 4, 4, name="fc"), "act")]), tmp_path / "m.onnx")
    code = f"import sys\nsys.argv = ['relulint', {str(tmp_path / 'm.onnx')!r}, '--no-probe']\n"
    code += "from relulint.launch import main\nmain()\n"
    loaded = modules_after(tmp_path, code)
    assert {"onnx.onnx_ml_pb2", "ml_dtypes"} <= loaded


def test_probe_child_imports_onnxruntime_but_not_onnx(tmp_path):
    from relulint.probe.runner import child_command

    command = child_command()
    boot = command[3].replace(
        "from relulint.probe.worker import main\nmain()", "import relulint.probe.worker, onnxruntime"
    )
    code = REPORT_MODULES + boot.replace("sys.argv[1]", repr(command[4])).replace("sys.argv[2]", repr(command[5]))
    loaded = modules_after(tmp_path, code)
    assert {"relulint.probe.worker", "onnxruntime"} <= loaded
    assert not [m for m in loaded if m.startswith(("onnx.", "ml_dtypes", "google.protobuf"))]
