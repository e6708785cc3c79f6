"""Outputs never harm (issue 15, item 5): reports never overwrite an input, a device or a link, and
names a model or its file supplies are escaped for workflow commands and Markdown everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from relulint.findings import Finding, ModelResult, Severity
from relulint.modelkit import ModelBuilder
from relulint.report.escape import clean, json_text, markdown_text, shown_path

FORMATS = ["text", "json", "sarif", "github", "html"]


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("RELULINT_DEBUG", "GITHUB_STEP_SUMMARY")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "relulint", *args],
        capture_output=True,
        cwd=cwd,
        env=environment,
        timeout=300,
    )


def model(folder: Path, name: str = "model.onnx", node: str = "act1") -> Path:
    b = ModelBuilder(seed=3)
    x = b.input("x", [1, 4])
    y = b.relu(b.gemm(x, 4, 8, name="fc1", bias=-9.0), node)
    path = folder / name
    onnx.save(b.build([b.gemm(y, 8, 2, name="fc2")]), path)
    return path


def external_model(folder: Path, data_name: str = "weights.bin", location: str | None = None) -> Path:
    """A model whose one weight lives in ``data_name`` (named ``location`` in the model)."""
    weight = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    (folder / data_name).write_bytes(weight.raw_data)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location or data_name), ("offset", "0"), ("length", str(8 * 4 * 4))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wt"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="r")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    graph.node.insert(0, helper.make_node("Transpose", ["w"], ["wt"], name="t"))
    path = folder / "ext.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def refused(result: subprocess.CompletedProcess, *words: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("relulint: error: "), stderr
    assert result.stdout == b""  # refused before any analysis: no partial output
    for word in words:
        assert word in stderr


# ---- destinations ----------------------------------------------------------------------------
def test_report_onto_the_compare_checkpoint_is_refused(tmp_path):
    new, old = model(tmp_path, "new.onnx"), model(tmp_path, "old.onnx")
    before = old.read_bytes()
    refused(run(str(new), "--no-probe", "--compare", str(old), "--format", "json", "-o", str(old)), "input model")
    assert old.read_bytes() == before


@pytest.mark.parametrize("how", ["plain", "hard link", "symbolic link"])
def test_report_onto_external_data_is_refused(tmp_path, how):
    data = tmp_path / "real.bin"
    if how == "plain":
        path = external_model(tmp_path, "real.bin")
    else:
        path = external_model(tmp_path, "alias.bin")
        os.replace(tmp_path / "alias.bin", data)
        (os.link if how == "hard link" else os.symlink)(data, tmp_path / "alias.bin")
    before = data.read_bytes()
    refused(run(str(path), "--no-probe", "--format", "json", "-o", str(data)), "external data")
    assert data.read_bytes() == before
    # the same name elsewhere, or a file the model does not name, is written
    other = tmp_path / "other.json"
    other.write_text("old\n")
    assert run(str(path), "--no-probe", "-o", str(other)).returncode in (0, 1)
    assert json.loads(other.read_text())["models"][0]["path"] == str(path)


def test_report_onto_the_data_file_or_into_the_data_folder_is_refused(tmp_path):
    path = model(tmp_path)
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((4, 1, 4), np.float32))
    before = data.read_bytes()
    refused(run(str(path), "--data", str(data), "--format", "json", "-o", str(data)), "input of this run")
    assert data.read_bytes() == before
    folder = tmp_path / "samples"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((4, 1, 4), np.float32))
    refused(run(str(path), "--data", str(folder), "-o", str(folder / "r.json")), "--data folder")
    assert sorted(p.name for p in folder.iterdir()) == ["a.npy"]


def test_report_onto_the_configuration_file_is_refused(tmp_path):
    path = model(tmp_path)
    config = tmp_path / "relulint.toml"
    config.write_text("probe = false\n")
    refused(run(str(path), "--config", str(config), "--format", "json", "-o", str(config)), "input of this run")
    refused(run(str(path), "--format", "json", "-o", "relulint.toml", cwd=tmp_path), "input of this run")  # found
    assert config.read_text() == "probe = false\n"


def test_report_onto_a_device_or_a_pipe_is_refused(tmp_path):
    path = model(tmp_path)
    refused(run(str(path), "--no-probe", "--format", "json", "-o", "/dev/null"), "device")
    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)
    refused(run(str(path), "--no-probe", "-o", str(pipe)), "named pipe")


def test_report_through_a_symbolic_link_is_refused(tmp_path):
    path = model(tmp_path)
    target = tmp_path / "kept.txt"
    target.write_text("precious\n")
    for name, points_to in (("link.json", target), ("dangling.json", tmp_path / "nowhere")):
        (tmp_path / name).symlink_to(points_to)
        refused(run(str(path), "--no-probe", "-o", str(tmp_path / name)), "symbolic link")
        assert (tmp_path / name).is_symlink()
    assert target.read_text() == "precious\n" and not (tmp_path / "nowhere").exists()


# ---- names escaped for workflow commands ------------------------------------------------------
COMMAND_NAME = "::error title=X::a.onnx"
LEGACY = "##[error]legacy"


def never_a_command(output: str, fmt: str) -> None:
    for line in output.splitlines():
        if fmt == "github" and line.startswith(("::error file=", "::warning file=", "::notice file=")):
            assert "::error title=X" not in line.split("::", 2)[1]  # the name stays in an escaped property
            continue
        assert not line.lstrip().startswith("::"), line
    assert "##[" not in output


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_name_never_starts_a_workflow_command(tmp_path, fmt):
    path = model(tmp_path, COMMAND_NAME, node=LEGACY)
    result = run(COMMAND_NAME, "--no-probe", "--format", fmt, "--sarif-root", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    output = result.stdout.decode()
    never_a_command(output, fmt)
    never_a_command(result.stderr.decode(), fmt)
    if fmt == "text":
        assert f"./{COMMAND_NAME}: ##\\x5berror]legacy [RL" in output  # the same file, shown safely
    if fmt in ("json", "sarif"):
        assert COMMAND_NAME in output and LEGACY in json.dumps(json.loads(output), ensure_ascii=False)
    assert path.exists()


def test_a_broken_model_named_like_a_command_is_one_safe_error_line(tmp_path):
    (tmp_path / COMMAND_NAME).write_bytes(b"not a model")
    result = run(COMMAND_NAME, "--no-probe", cwd=tmp_path)
    assert result.returncode == 2
    never_a_command(result.stdout.decode() + result.stderr.decode(), "text")


def test_escaping_helpers():
    assert shown_path("::x.onnx") == "./::x.onnx" and shown_path("  ::x") == "./  ::x"
    assert shown_path("models/a.onnx") == "models/a.onnx"
    assert clean("a##[b\x1b") == "a##\\x5bb\\x1b"
    assert json.loads(json_text(json.dumps({"k": "##[x \udcff"}, ensure_ascii=False))) == {"k": "##[x \udcff"}


# ---- the step summary ------------------------------------------------------------------------
HOSTILE_MARKDOWN = (
    "![img](https://evil.example/x.png) [link](http://evil.example) @octocat <b>html</b> *em* www.evil.example"
)


def test_step_summary_escapes_markdown(tmp_path):
    path = model(tmp_path, node=HOSTILE_MARKDOWN)
    summary = tmp_path / "summary.md"
    result = run(str(path), "--no-probe", "--format", "github", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.returncode == 1
    text = summary.read_text(encoding="utf-8").replace(
        "[RL201](https://github.com/relulint/relulint/blob/main/rules/RL201.md)", ""
    )
    assert "\\!\\[img\\]\\(https:\u2060//evil\\.example/x\\.png\\)" in text
    for raw in ("![", "](", "<b>", "@octocat", "*em*", "http://", "www.evil"):
        assert raw not in text, raw


def test_markdown_text_keeps_the_words():
    shown = markdown_text("a|b `c` @d <e> f_g")
    assert shown == "a\\|b \\`c\\` @\u2060d &lt;e&gt; f\\_g"


# ---- names that are not UTF-8 ----------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_file_names_that_are_not_utf8(tmp_path, fmt):
    name = b"caf\xe9.onnx"
    model(tmp_path, "plain.onnx")
    os.rename(tmp_path / "plain.onnx", os.path.join(os.fsencode(tmp_path), name))
    out = tmp_path / f"report.{ {'text': 'txt', 'github': 'txt'}.get(fmt, fmt) }"
    result = run(os.fsdecode(name), "--no-probe", "--format", fmt, "-o", out.name, "--sarif-root", ".", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    written = out.read_text(encoding="utf-8")
    if fmt == "json":
        assert json.loads(written)["models"][0]["path"] == "caf\udce9.onnx"  # a surrogate escape, as Python reads it
        assert '"caf\\udce9.onnx"' in written
    elif fmt == "sarif":
        assert json.loads(written)["runs"][0]["artifacts"][0]["location"]["uri"] == "caf%E9.onnx"  # the bytes
    elif fmt == "html":
        assert "caf\\udce9.onnx" in written
    else:
        assert "caf\\udce9.onnx" in written


def test_findings_render_for_a_direct_caller_too():
    result = ModelResult(path="caf\udce9.onnx", findings=[Finding("RL201", Severity.ERROR, "m", node="##[x")])
    from relulint.config import Config
    from relulint.report import Run, render

    for fmt in FORMATS:
        output = render(fmt, Run(results=[result], config=Config(probe=False)))
        output.encode("utf-8")  # no lone surrogate left
        assert "##[" not in output
