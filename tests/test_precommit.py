"""The pre-commit hooks, run by pre-commit itself (``pre-commit try-repo`` against this checkout).

pre-commit installs this repository into its own virtualenv (dependencies from PyPI) once; the
environment lives in a PRE_COMMIT_HOME shared by the tests of this module.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_manifest_declares_both_hooks_for_models_and_their_data():
    hooks = {hook["id"]: hook for hook in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))}
    assert set(hooks) == {"relulint", "relulint-static"}
    for hook in hooks.values():
        assert hook["language"] == "python" and hook["require_serial"] is True  # one run, one summary
        for name in ("m.onnx", "m.onnx.data", "m.onnx_data", "weights.bin"):
            assert re.search(hook["files"], name), name
        assert not re.search(hook["files"], "notes.txt")
        assert hook["entry"].split()[:2] == ["relulint", "--from-data"]
    assert "--no-probe" in hooks["relulint-static"]["entry"] and "--no-probe" not in hooks["relulint"]["entry"]


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A git repository holding a dying and a healthy model, and the environment pre-commit runs in."""
    if shutil.which("pre-commit") is None or shutil.which("git") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but pre-commit or git is not installed")
        pytest.skip("pre-commit or git is not installed")
    base = tmp_path_factory.mktemp("precommit")
    repo = base / "models-repo"
    (repo / "models").mkdir(parents=True)
    shutil.copy(EXAMPLES / "dying_mlp.onnx", repo / "models" / "dying.onnx")
    shutil.copy(EXAMPLES / "healthy_convnet.onnx", repo / "models" / "healthy.onnx")
    save_with_external_data(repo / "models" / "external", bias=-4.0)
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_") and key != "RELULINT_DEBUG"}
    env.update(
        PRE_COMMIT_HOME=str(base / "pre-commit-home"),  # one hook environment for the whole module
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
        GIT_CONFIG_NOSYSTEM="1",
        HOME=str(base),
    )
    for command in (["git", "init", "-q"], ["git", "add", "models"], ["git", "commit", "-q", "-m", "models"]):
        subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)
    return repo, env


def save_with_external_data(folder: Path, bias: float) -> None:
    """``model.onnx`` with its weights in ``model.onnx.data``: an MLP whose biases decide if it dies."""
    from relulint.modelkit import ModelBuilder, mlp

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx.data").unlink(missing_ok=True)  # onnx appends to an existing data file
    b = ModelBuilder(seed=1)
    onnx.save(
        b.build([mlp(b, b.input("x", [1, 8]), [8, 16, 16, 2], bias_value=bias)]),
        folder / "model.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )


def try_repo(repository: tuple[Path, dict[str, str]], hook: str, *files: str) -> subprocess.CompletedProcess:
    repo, env = repository
    return subprocess.run(
        ["pre-commit", "try-repo", str(ROOT), hook, "--files", *[f"models/{f}" for f in files]]
        + ["--verbose", "--color", "never"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


@pytest.mark.parametrize("hook", ["relulint-static", "relulint"])
def test_hook_fails_on_a_dying_model_and_passes_on_a_healthy_one(repository, hook):
    dying = try_repo(repository, hook, "dying.onnx")
    output = dying.stdout + dying.stderr
    assert dying.returncode == 1, output
    assert "Failed" in output and "- exit code: 1" in output
    assert "models/dying.onnx: fc2_relu [RL" in output  # relulint's own report, shown by pre-commit
    healthy = try_repo(repository, hook, "healthy.onnx")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "Passed" in healthy.stdout


def test_a_weights_only_change_runs_the_hook_on_the_model(repository):
    """Only model.onnx.data changed (retrained weights that now kill every unit): the hook still runs."""
    repo, _ = repository
    save_with_external_data(repo / "models" / "external", bias=0.1)
    clean = try_repo(repository, "relulint-static", "external/model.onnx.data")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    before = (repo / "models" / "external" / "model.onnx").read_bytes()
    save_with_external_data(repo / "models" / "external", bias=-40.0)
    assert (repo / "models" / "external" / "model.onnx").read_bytes() == before  # only the weights differ
    dying = try_repo(repository, "relulint-static", "external/model.onnx.data")
    output = dying.stdout + dying.stderr
    assert dying.returncode == 1, output
    assert "models/external/model.onnx: " in output and "[RL201] error" in output
    (repo / "models" / "unrelated.bin").write_bytes(b"not weights")  # a .bin no model names is skipped
    skipped = try_repo(repository, "relulint-static", "unrelated.bin")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
