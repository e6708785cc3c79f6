"""--format github: workflow commands with GitHub's escaping, and the step summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import relulint.rules
from relulint.config import Config
from relulint.findings import Finding, ModelResult, Note, Severity
from relulint.modelkit import ModelBuilder
from relulint.outputs import append_step_summary
from relulint.report import Run, render
from relulint.report.github import escape_data, escape_property, step_summary
from relulint.rules import Rule, RuleMeta

FAKE = RuleMeta(id="RL197", name="test-rule", severity=Severity.WARNING, summary="s", why="w", fix="f")


@pytest.fixture(autouse=True)
def fake_rule(monkeypatch):
    real = relulint.rules.all_rules()
    monkeypatch.setattr(relulint.rules, "all_rules", lambda: (*real, Rule(FAKE, lambda ctx, options: [])))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def run_of(*results: ModelResult, root: Path) -> Run:
    return Run(results=list(results), config=Config(probe=False, sarif_root=str(root)))


def unescape(text: str) -> str:
    """What GitHub's runner does to a command's data and properties."""
    for escaped, raw in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        text = text.replace(escaped, raw)
    return text


def test_escaping_follows_the_runner():
    assert escape_data("50% of units\r\ndead: a,b") == "50%25 of units%0D%0Adead: a,b"
    assert escape_property("a:b,c%d\ne") == "a%3Ab%2Cc%25d%0Ae"
    for text in ["%0A is not a newline", "x:y,z", "100%", "a\nb\rc"]:
        assert unescape(escape_property(text)) == text
        assert unescape(escape_data(text)) == text


@given(st.text())
def test_escaped_text_never_ends_a_command_and_round_trips(text):
    for escaped in (escape_data(text), escape_property(text)):
        assert "\n" not in escaped and "\r" not in escaped
        assert unescape(escaped) == text
    assert ":" not in escape_property(text) and "," not in escape_property(text)


def test_one_command_per_finding_with_file_line_and_title(tmp_path):
    result = ModelResult(
        path=str(tmp_path / "models" / "net,v1.onnx"),
        findings=[
            Finding("RL197", Severity.ERROR, "most units dead", node="fc1_relu"),
            Finding("RL197", Severity.WARNING, "50% at risk", node="fc2"),
            Finding("RL197", Severity.NOTE, "model-wide"),
            Finding("RL999", Severity.WARNING, "from a rule this version does not know", node="x"),
        ],
        notes=[Note("skipped", "the probe did not run"), Note("info", "not annotated")],
    )
    lines = render("github", run_of(result, root=tmp_path)).splitlines()
    assert lines[:5] == [
        "::error file=models/net%2Cv1.onnx,line=1,title=RL197 test-rule::fc1_relu: most units dead",
        "::warning file=models/net%2Cv1.onnx,line=1,title=RL197 test-rule::fc2: 50%25 at risk",
        "::notice file=models/net%2Cv1.onnx,line=1,title=RL197 test-rule::model-wide",
        "::warning file=models/net%2Cv1.onnx,line=1,title=RL999::x: from a rule this version does not know",
        "::notice file=models/net%2Cv1.onnx,line=1,title=relulint%3A skipped::the probe did not run",
    ]
    assert lines[5] == "Found 1 error, 2 warnings, 1 note in 1 model."
    assert len(lines) == 6


def test_model_supplied_names_cannot_break_out_of_a_command(tmp_path):
    node = "evil\n::error file=x::forged\r\x1b[31m"
    message = "two\n::error::lines\r"
    result = ModelResult(
        path=str(tmp_path / "m.onnx"), findings=[Finding("RL197", Severity.WARNING, message, node=node)]
    )
    lines = render("github", run_of(result, root=tmp_path)).splitlines()
    assert len(lines) == 2 and lines[0].startswith("::warning file=m.onnx,line=1,")
    assert "\x1b" not in lines[0]
    # the node name shows its control characters escaped; the message keeps its line break (GitHub shows it)
    assert unescape(lines[0].split("::", 2)[2]) == "evil\\n::error file=x::forged\\r\\x1b[31m: two\n::error::lines\\r"


def test_a_model_that_could_not_be_read_is_an_error_annotation(tmp_path):
    result = ModelResult(path=str(tmp_path / "bad.onnx"), error="not an ONNX model: it has no graph")
    lines = render("github", run_of(result, root=tmp_path)).splitlines()
    assert (
        lines[0]
        == "::error file=bad.onnx,line=1,title=relulint::could not be analysed: not an ONNX model: it has no graph"
    )


def test_step_summary_gets_a_table_of_all_findings(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    findings = [Finding("RL197", Severity.WARNING, f"finding {i}", node=f"n{i}") for i in range(25)]
    findings.append(Finding("RL197", Severity.ERROR, "a | b <img src=x onerror=alert(1)>", node="pipe|node"))
    run = run_of(ModelResult(path=str(tmp_path / "m.onnx"), findings=findings), root=tmp_path)
    assert append_step_summary(step_summary(run, tmp_path)) is None
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n## relulint\n")  # appended, not overwritten
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 26  # header + every finding, beyond GitHub's 10 annotations per level
    assert rows[0] == "| severity | rule | model | node | message |"
    assert (
        "| warning | [RL197](https://github.com/relulint/relulint/blob/main/rules/RL197.md) test-rule | m\\.onnx | n0 | finding 0 |"
        in rows
    )
    last = rows[-1]
    assert (
        last
        == "| error | [RL197](https://github.com/relulint/relulint/blob/main/rules/RL197.md) test-rule | m\\.onnx | pipe\\|node | a \\| b &lt;img src=x onerror=alert\\(1\\)&gt; |"
    )
    append_step_summary(step_summary(run, tmp_path))
    assert summary.read_text(encoding="utf-8").count("## relulint") == 2


def test_rendering_writes_no_summary_the_command_line_does(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    render(
        "github", run_of(ModelResult(path="m.onnx", findings=[Finding("RL197", Severity.ERROR, "x")]), root=tmp_path)
    )
    assert not summary.exists()  # renderers only render


def test_no_summary_file_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert append_step_summary("## relulint\n") is None
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_summary_is_a_warning_not_a_crash(tmp_path):
    model = tmp_path / "m.onnx"
    b = ModelBuilder(seed=1)
    onnx.save(b.build([b.relu(b.gemm(b.input("x", [1, 4]), 4, 4, name="fc"), "r")]), model)
    env = {k: v for k, v in os.environ.items() if k != "RELULINT_DEBUG"}
    env["GITHUB_STEP_SUMMARY"] = str(tmp_path / "no such folder" / "summary.md")
    done = subprocess.run(
        [sys.executable, "-m", "relulint", str(model), "--no-probe", "--format", "github"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr
    assert done.stderr.startswith("relulint: warning: cannot append the summary to $GITHUB_STEP_SUMMARY")


def test_cli_prints_annotations(tmp_path):
    b = ModelBuilder(seed=1)
    x = b.input("x", [1, 4])
    onnx.save(b.build([b.relu(b.gemm(x, 4, 8, bias=[-50.0] * 8, name="fc1"), "act1")]), tmp_path / "dying.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07")
    env = {k: v for k, v in os.environ.items() if k not in ("RELULINT_DEBUG", "GITHUB_STEP_SUMMARY")}
    done = subprocess.run(
        [sys.executable, "-m", "relulint", "broken.onnx", "dying.onnx", "--no-probe", "--format", "github"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 2, done.stderr  # a model that cannot be read
    assert lines[0].startswith("::error file=broken.onnx,line=1,title=relulint::could not be analysed: ")
    assert all(
        line.startswith(
            (
                "::error file=dying.onnx,line=1,title=RL",
                "::warning file=dying.onnx,line=1,title=RL",
                "::notice file=dying.onnx,line=1,title=",
            )
        )
        for line in lines[1:-1]
    )
    assert lines[-1].endswith("in 2 models (1 could not be analysed).")


# ---- the composite action (action.yml) -------------------------------------------------------
ACTION = Path(__file__).resolve().parent.parent / "action.yml"


def action_steps() -> dict[str, dict]:
    import yaml

    action = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    assert action["runs"]["using"] == "composite"
    assert set(action["inputs"]) >= {"paths", "args", "fail-on", "sarif"}
    return {step["name"]: step for step in action["runs"]["steps"]}


def test_action_scripts_take_inputs_only_from_the_environment():
    for step in action_steps().values():
        assert "${{" not in step["run"], f"{step['name']}: an expression in a script allows script injection"


def dying_gemm_model(path: Path) -> None:
    b = ModelBuilder(seed=1)
    x = b.input("x", [1, 16])
    y = b.relu(b.gemm(x, 16, 32, bias=[-40.0] * 32, name="fc1"), "act1")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(b.build([b.gemm(y, 32, 2, name="head")]), path)


def run_action_step(name: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """One step's script as GitHub's runner runs it (bash -e -o pipefail), inputs in the environment."""
    env = {k: v for k, v in os.environ.items() if k != "RELULINT_DEBUG"}
    env.update(variables)
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", action_steps()[name]["run"]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_action_lint_step_annotates_and_writes_sarif(tmp_path):
    """The lint step with the interpreter of a virtual environment relulint is installed in, as the install
    step leaves it (this test's own); paths with spaces and globs, arguments with quotes."""
    dying_gemm_model(tmp_path / "my models" / "dying.onnx")
    dying_gemm_model(tmp_path / "more" / "a" / "dying too.onnx")
    (tmp_path / "numpy.py").write_text("raise SystemExit('planted numpy ran')\n")  # -I: never imported
    output, summary = tmp_path / "github_output", tmp_path / "summary.md"
    (tmp_path / "out").mkdir()
    done = run_action_step(
        "Run relulint",
        tmp_path,
        RELULINT_PYTHON=sys.executable,
        GITHUB_OUTPUT=str(output),
        GITHUB_STEP_SUMMARY=str(summary),
        RELULINT_PATHS="  my models  \n\nmore/**/*.onnx\n",
        RELULINT_ARGS="--select 'RL2'  --no-probe",
        RELULINT_FAIL_ON="error",
        RELULINT_SARIF="out/relulint.sarif",
        RELULINT_HTML="",
    )
    assert done.returncode == 1, done.stdout + done.stderr  # every unit of act1 is biased far below zero
    annotated = {line.split(",", 1)[0] for line in done.stdout.splitlines() if line.startswith("::error file=")}
    assert annotated == {"::error file=my models/dying.onnx", "::error file=more/a/dying too.onnx"}
    assert output.read_text(encoding="utf-8").splitlines() == ["exit-code=1", "sarif=out/relulint.sarif"]
    import json

    sarif = json.loads((tmp_path / "out" / "relulint.sarif").read_text(encoding="utf-8"))
    results = sarif["runs"][0]["results"]
    assert results and {r["ruleId"][:3] for r in results} == {"RL2"}
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
    assert uris == {"my%20models/dying.onnx", "more/a/dying%20too.onnx"}
    assert summary.read_text(encoding="utf-8").startswith("## relulint\n")


def test_action_lint_step_refuses_unbalanced_quotes(tmp_path):
    output = tmp_path / "github_output"
    done = run_action_step(
        "Run relulint",
        tmp_path,
        RELULINT_PYTHON=sys.executable,
        GITHUB_OUTPUT=str(output),
        RELULINT_ARGS="--select 'RL2",
    )
    assert done.returncode == 1 and "the args input cannot be split" in done.stderr
    assert not output.exists()


def stub_wheel(folder: Path) -> Path:
    """A wheel of one empty module: what the install step installs stands in for relulint (no index needed)."""
    import zipfile

    wheel = folder / "relulint_action_stub-1.0-py3-none-any.whl"
    info = "relulint_action_stub-1.0.dist-info"
    files = {
        "relulint_action_stub.py": "",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: relulint-action-stub\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def externally_managed_python() -> str | None:
    """A python3 whose installation refuses pip (PEP 668), as on Debian and Ubuntu runners, if there is one."""
    import shutil

    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if not candidate:
            continue
        done = subprocess.run(
            [
                candidate,
                "-c",
                "import sysconfig, os; print(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED'))",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode == 0 and Path(done.stdout.strip()).is_file():
            return candidate
    return None


def test_action_install_step_makes_its_own_environment_on_an_externally_managed_python(tmp_path):
    base = externally_managed_python()
    if base is None:
        pytest.skip("no externally managed python3 on this machine")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(base)
    output = tmp_path / "github_output"
    done = run_action_step(
        "Install relulint",
        tmp_path,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        RUNNER_TEMP=str(tmp_path / "runner temp"),
        GITHUB_OUTPUT=str(output),
        RELULINT_INSTALL=str(stub_wheel(tmp_path)),
        RELULINT_ACTION_PATH=str(ACTION.parent),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    python = output.read_text(encoding="utf-8").strip().removeprefix("python=")
    assert Path(python).parent.parent == tmp_path / "runner temp" / "relulint-venv"
    installed = subprocess.run(
        [python, "-I", "-c", "import relulint_action_stub, sys; print(sys.prefix)"], capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr
    assert Path(installed.stdout.strip()) == tmp_path / "runner temp" / "relulint-venv"
    assert subprocess.run([base, "-c", "import relulint_action_stub"], capture_output=True).returncode != 0
