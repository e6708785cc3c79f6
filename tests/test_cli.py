"""The command line, run as a user runs it: a real process, exit status, stdout and stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from relulint.modelkit import ModelBuilder

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    environment.pop("RELULINT_DEBUG", None)  # as a user runs it: internal errors must not raise
    return subprocess.run(
        [sys.executable, "-m", "relulint", *args], capture_output=True, text=True, cwd=cwd, env=environment, timeout=300
    )


def healthy(tmp_path: Path, name: str = "good.onnx") -> Path:
    b = ModelBuilder(seed=3)
    x = b.input("x", [1, 4])
    y = b.relu(b.gemm(x, 4, 8, name="fc1"), "act1")
    path = tmp_path / name
    onnx.save(b.build([b.gemm(y, 8, 2, name="fc2")]), path)
    return path


def test_good_garbage_and_missing(tmp_path):
    good = healthy(tmp_path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(64) + b"\xff\xff\xff")
    result = run(str(good), str(garbage), str(tmp_path / "missing.onnx"), "--no-probe", "--format", "json")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"relulint: error: {garbage}: not an ONNX model")
    assert errors[1] == f"relulint: error: {tmp_path / 'missing.onnx'}: no such file"
    models = json.loads(result.stdout)["models"]
    assert [m["path"] for m in models] == [str(good), str(garbage), str(tmp_path / "missing.onnx")]
    assert models[0]["opset"] == 17 and len(models[0]["units"]) == 1 and "error" not in models[0]
    assert models[2]["error"] == "no such file"


def test_json_contract_fields(tmp_path):
    result = run(str(healthy(tmp_path)), "--no-probe", "--format", "json")
    document = json.loads(result.stdout)
    assert set(document) >= {"version", "tool", "models"}
    assert document["tool"]["name"] == "relulint"
    model = document["models"][0]
    assert set(model) >= {
        "path",
        "sha256",
        "opset",
        "producer",
        "ir_version",
        "parameters",
        "units",
        "findings",
        "notes",
    }
    unit = model["units"][0]
    assert {k: unit[k] for k in ("name", "activation_op", "family", "linear", "linear_op", "units", "fan_in")} == {
        "name": "act1",
        "activation_op": "Relu",
        "family": "plain",
        "linear": "fc1",
        "linear_op": "Gemm",
        "units": 8,
        "fan_in": 4,
    }
    assert unit["metrics"]["he_std"] == pytest.approx((2 / 4) ** 0.5, rel=1e-5)


def test_python_dash_m_and_console_script_agree(tmp_path):
    script = shutil.which("relulint")
    if script is None:
        pytest.skip("console script not on PATH")
    model = str(healthy(tmp_path))
    via_script = subprocess.run([script, model, "--no-probe", "--format", "json"], capture_output=True, text=True)
    via_module = run(model, "--no-probe", "--format", "json")
    assert json.loads(via_script.stdout)["models"] == json.loads(via_module.stdout)["models"]


def test_folders_are_searched_recursively_and_empty_ones_are_errors(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    healthy(tmp_path / "a", "one.onnx")
    healthy(tmp_path / "a" / "b", "two.onnx")
    (tmp_path / "a" / "notes.txt").write_text("not a model")
    result = run(str(tmp_path / "a"), "--no-probe", "--format", "json")
    assert result.returncode == 0, result.stderr
    found = [m["path"] for m in json.loads(result.stdout)["models"]]
    assert found == [str(tmp_path / "a" / "b" / "two.onnx"), str(tmp_path / "a" / "one.onnx")]  # sorted paths
    result = run(str(tmp_path / "empty"), "--no-probe")
    assert result.returncode == 2
    assert result.stderr.strip() == f"relulint: error: {tmp_path / 'empty'}: folder holds no .onnx files"


def test_output_files_are_written_and_bad_destinations_refused(tmp_path):
    model = healthy(tmp_path)
    report = tmp_path / "report.json"
    result = run(str(model), "--no-probe", "-o", str(report), "-o", str(tmp_path / "r.txt"))
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["models"][0]["path"] == str(model)
    assert "No findings in 1 model." in (tmp_path / "r.txt").read_text()
    assert "No findings" in result.stdout  # the terminal still hears what was found
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind
    umask = os.umask(0)
    os.umask(umask)
    assert report.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private 0600
    sarif = tmp_path / "r.sarif"
    result = run(
        str(model), "--no-probe", "--format", "json", "-o", "-", "-o", str(sarif), "--sarif-root", str(tmp_path)
    )
    assert json.loads(result.stdout)["models"][0]["path"] == str(model)  # --format names stdout's format
    assert json.loads(sarif.read_text())["version"] == "2.1.0"  # the file's format follows its extension

    result = run(str(model), "--no-probe", "-o", str(tmp_path / "missing" / "r.json"))
    assert result.returncode == 2
    assert result.stderr.strip().endswith("does not exist") and "Traceback" not in result.stderr
    before = model.read_bytes()
    result = run(str(model), "--no-probe", "--format", "json", "-o", str(model))
    assert result.returncode == 2 and "refusing to overwrite an input model" in result.stderr
    assert model.read_bytes() == before


def test_usage_errors_are_one_line_exit_2(tmp_path):
    model = str(healthy(tmp_path))
    for args, message in [
        ((), "no model given"),
        (("--explain", "RL999"), "no rule 'RL999'"),
        ((model, "--select", "XYZ"), "is not a rule id or prefix"),
        ((model, "--input-shape", "1x3"), "--input-shape expects NAME=1x3x224x224"),
        ((model, "--format", "json", "--format", "text"), "give one --format"),
        ((model, "--format", "json", "-o", "a.json", "-o", "b.txt"), "each file's format follows its extension"),
        ((model, "-o", str(tmp_path / "r.unknown")), "cannot tell the format"),
        ((model, "--max-model-size", "lots"), "must be a size"),
    ]:
        result = run(*args)
        assert result.returncode == 2, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)


def test_configuration_file_is_found_upward_and_the_cli_overrides_it(tmp_path):
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    model = healthy(project / "models")
    (project / "pyproject.toml").write_text('[tool.relulint]\nmax-model-size = "100B"\n')
    result = run(str(model), "--no-probe", cwd=project / "models")
    assert result.returncode == 2 and "over the 100-byte limit" in result.stderr
    result = run(str(model), "--no-probe", "--max-model-size", "1MB", cwd=project / "models")
    assert result.returncode == 0, result.stderr
    (project / "relulint.toml").write_text("unknown-key = 1\n")  # relulint.toml wins over pyproject.toml
    result = run(str(model), "--no-probe", cwd=project / "models")
    assert result.returncode == 2
    assert result.stderr.strip() == f"relulint: error: {project / 'relulint.toml'}: unknown key 'unknown-key'"


def test_jobs_keep_the_input_order_and_exit_status(tmp_path):
    paths = [str(healthy(tmp_path, f"m{i}.onnx")) for i in range(5)]
    garbage = tmp_path / "bad.onnx"
    garbage.write_text("nope")
    args = [*paths[:2], str(garbage), *paths[2:], "--no-probe", "--format", "json"]
    serial, parallel = run(*args), run(*args, "--jobs", "3")
    assert serial.returncode == parallel.returncode == 2
    order = [m["path"] for m in json.loads(parallel.stdout)["models"]]
    assert order == [*paths[:2], str(garbage), *paths[2:]]
    assert json.loads(serial.stdout)["models"] == json.loads(parallel.stdout)["models"]
    assert serial.stderr == parallel.stderr


def test_list_rules_and_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("relulint, version ")
    result = run("--list-rules")
    assert result.returncode == 0


# ---- ruff-like conventions (issue 15, item 6) ------------------------------------------------
def invoke(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from relulint.cli import main

    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def found(*args: str) -> list[str]:
    status, stdout, stderr = invoke(*args, "--no-probe", "--format", "json")
    assert status in (0, 1), stderr
    return [Path(m["path"]).as_posix() for m in json.loads(stdout)["models"]]


def test_folder_search_skips_environments_excludes_and_what_git_ignores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("models", ".venv/lib/site-packages/pkg", "node_modules/x", "models/scratch", "models/data"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        healthy(tmp_path / folder, "m.onnx")
    assert found(".") == ["models/data/m.onnx", "models/m.onnx", "models/scratch/m.onnx"]
    assert found(".", "--extend-exclude", "scratch,models/data") == ["models/m.onnx"]
    assert "node_modules/x/m.onnx" in found(".", "--exclude", ".venv")  # replaces the defaults
    assert found(".venv/lib/site-packages/pkg/m.onnx") == [".venv/lib/site-packages/pkg/m.onnx"]  # named: linted
    (tmp_path / "relulint.toml").write_text('extend-exclude = ["scratch"]\n')
    assert found(".") == ["models/data/m.onnx", "models/m.onnx"]
    (tmp_path / "relulint.toml").unlink()
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q"], check=True)
    (tmp_path / ".gitignore").write_text("scratch/\n")
    assert found(".") == ["models/data/m.onnx", "models/m.onnx"]
    assert found(".", "--no-respect-gitignore") == ["models/data/m.onnx", "models/m.onnx", "models/scratch/m.onnx"]


def test_exclude_patterns_with_a_slash_are_anchored_like_ruffs(tmp_path, monkeypatch):
    """In a configuration file they are relative to its folder, on the command line to the current one,
    whichever folder is searched; a pattern without a slash matches a name anywhere."""
    project = tmp_path / "project"
    for folder in ("models/old", "models/new"):
        (project / folder).mkdir(parents=True)
        healthy(project / folder, "m.onnx")
    (project / "relulint.toml").write_text('extend-exclude = ["models/old"]\n')
    monkeypatch.chdir(project / "models")  # the file is found upward; its pattern still names project/models/old
    assert found(".") == ["new/m.onnx"]
    monkeypatch.chdir(project)
    assert found("models") == ["models/new/m.onnx"]
    (project / "relulint.toml").unlink()
    monkeypatch.chdir(project / "models")
    assert found("..", "--extend-exclude", "models/old") == ["../models/new/m.onnx", "../models/old/m.onnx"]
    assert found("..", "--extend-exclude", "./old") == ["../models/new/m.onnx"]
    assert found("..", "--extend-exclude", "old") == ["../models/new/m.onnx"]


def test_a_data_file_stands_for_the_model_that_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net" / "weights").mkdir(parents=True)
    b = ModelBuilder(seed=3)
    model = b.build([b.gemm(b.relu(b.gemm(b.input("x", [1, 4]), 4, 8, name="fc1"), "act1"), 8, 2, name="fc2")])
    onnx.save(model, "net/model.onnx", save_as_external_data=True, location="weights/w.bin", size_threshold=0)
    healthy(tmp_path / "net", "other.onnx")
    assert found("net/weights/w.bin") == ["net/model.onnx"]
    assert found("net/weights/w.bin", "net/model.onnx", "--from-data") == ["net/model.onnx"]  # once
    (tmp_path / "stray.bin").write_bytes(b"\0" * 8)
    assert found("stray.bin", "--from-data") == []


def test_color_follows_the_option_and_the_environment():
    args = (str(EXAMPLES / "dying_mlp.onnx"), "--no-probe")
    assert "\x1b[" not in invoke(*args)[1]  # not a terminal
    assert "\x1b[1m" in invoke(*args, "--color", "always")[1]
    assert "\x1b[" not in invoke(*args, "--color", "never", env={"FORCE_COLOR": "1"})[1]
    assert "\x1b[1m" in invoke(*args, env={"FORCE_COLOR": "1"})[1]
    assert "\x1b[" not in invoke(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})[1]


def test_concise_lines_are_short_and_full_keeps_the_whole_message():
    dying = str(EXAMPLES / "dying_mlp.onnx")
    _, concise, _ = invoke(dying, "--select", "RL2,RL5")
    _, full, _ = invoke(dying, "--select", "RL2,RL5", "--output-format", "full")
    assert len(concise.splitlines()) == len(full.splitlines())
    assert max(len(line) for line in concise.splitlines()) < 250 < max(len(line) for line in full.splitlines())
    assert concise.count("synthetic inputs, which can make healthy units look dead") <= 1
    assert "fc2_relu [RL201] error: 128 of 128 units (100%)" in concise


def test_a_concise_line_is_cut_at_a_clause_never_inside_parentheses():
    from relulint.report.text import headline

    message = "ran on 304 samples (sr integers below 2; floats in [-1, 1]), which can mislead; pass --data"
    assert headline(message) == "ran on 304 samples (sr integers below 2; floats in [-1, 1]), which can mislead"
    assert headline("found 3; the worst: a") == "found 3"


def test_a_folder_named_on_the_command_line_is_searched_even_when_git_ignores_it(tmp_path, monkeypatch):
    # ruff and ripgrep search a folder the user names; only what git ignores *inside* a searched folder is skipped.
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache" / "sub").mkdir(parents=True)
    healthy(tmp_path / "cache", "a.onnx")
    healthy(tmp_path / "cache" / "sub", "b.onnx")
    subprocess.run(["git", "init", "-q"], check=True)
    (tmp_path / ".gitignore").write_text("cache/\n")
    assert found("cache") == ["cache/a.onnx", "cache/sub/b.onnx"]
    status, _, stderr = invoke(".", "--no-probe")
    assert status == 2
    assert "folder holds no .onnx files that are not excluded or git-ignored" in stderr
