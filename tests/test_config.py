"""Every bad input gets exit 2 and one line naming it (issue 15, item 4): the configuration schema, rule
ids, probe limits; a probe that did not finish and relulint's own defects get their own statuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

import relulint.cli
import relulint.engine
from relulint.cli import main
from relulint.config import load_config_file
from relulint.modelkit import ModelBuilder


def model(folder: Path, name: str = "m.onnx") -> Path:
    b = ModelBuilder(seed=3)
    x = b.input("x", [1, 4])
    y = b.relu(b.gemm(x, 4, 8, name="fc1"), "act1")
    path = folder / name
    onnx.save(b.build([b.gemm(y, 8, 2, name="fc2")]), path)
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_error(status: int, stdout: str, stderr: str, *parts: str) -> None:
    assert status == 2 and stdout == "", (status, stdout, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("relulint: error: "), stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


BAD_FILE_VALUES = [
    ("batch = inf", "'batch' must be a whole number"),
    ("batch = 8.0", "'batch' must be a whole number"),
    ("seed = [1]", "'seed' must be a whole number"),
    ("seed = -1", "'seed' must be a whole number"),
    ("jobs = 1e300", "'jobs' must be a whole number from 1 to 256"),
    ("samples = 0", "'samples' must be a whole number"),
    ("input-shape = { x = 5 }", "the shape of 'x' must be written like"),
    ('input-shape = { x = "1x0" }', "the shape of 'x'"),
    ("input-shape = 5", "'input-shape' must be a table"),
    ("input-range = { x = { lo = 0 } }", "the range of 'x' must be finite"),
    ('input-range = "0,1"', "'input-range' must be a table"),
    ("input-range = { x = [-inf, 1] }", "the range of 'x' must be finite"),
    ("input-range = { x = [1, 0] }", "lo <= hi"),
    ("probe-timeout = nan", "'probe-timeout' must be a number of seconds"),
    ("probe-timeout = -1", "'probe-timeout'"),
    ('probe-memory = "0MB"', "'probe-memory' must be a size"),
    ('probe-memory = "100000000GB"', "more than the"),
    ('input-dist = "normal:.,."', "'input-dist' must be normal"),
    ('input-dist = "normal:0,0"', "STD > 0"),
    ('input-dist = "uniform:1,0"', "LOW < HIGH"),
    ('input-dist = "cauchy:0,1"', "'input-dist'"),
    ("probe = 1", "'probe' must be true or false"),
    ("fail-on = 3", "'fail-on' must be error, warning or note"),
    ('fail-on = "fatal"', "'fail-on': unknown severity 'fatal'"),
    ("data = 5", "'data' must be a non-empty string"),
    ("probe-failure-status = 7", "'probe-failure-status' must be an exit status 0, 1 or 2"),
    ('select = ["RL801"]', "'select': no rule 'RL801'; did you mean RL701?"),
    ('ignore = ["RL9"]', "'ignore': no rule 'RL9'"),
    ('per-node-ignores = { "a*" = ["RL51"] }', "'per-node-ignores.a*': no rule 'RL51'; did you mean RL501?"),
    ("[rules.RL510]\nworst = 3", "'rules.RL510': no rule 'RL510'; did you mean RL505?"),
    ('[rules.RL201]\nseverity = "loud"', "'rules.RL201.severity': unknown severity"),
    ("[rules.RL201]\nk = nan", "'rules.RL201.k' must be a finite number"),
    ("[rules.RL101]\nmin_ratio = -inf", "'rules.RL101.min_ratio' must be a finite number"),
    ("[rules.RL101]\nmax_ratio = -2.0", "'rules.RL101.max_ratio' must not be negative"),
    ("[rules.RL501]\nerror_fraction = 1.5", "'rules.RL501.error_fraction' is a fraction from 0 to 1"),
    ('[rules.RL501]\nworst = "5"', "'rules.RL501.worst': option 'worst' of RL501 must be a int"),
    ("rules = 5", "'rules' must hold one table per rule id"),
    (
        "[margins]\ninput_scal = 1.0",
        "'margins': unknown option 'input_scal' (allowed: input_scale, constant_tolerance, k,",
    ),
    ("[margins]\nk = -1.0", "'margins.k' must not be negative"),
    ('[margins]\ninput_scale = "big"', "'margins.input_scale': option 'input_scale' of the margins analysis must be a"),
    ("margins = 5", "'margins' must be a table of the margins analysis's options"),
    ("[rules.RL201]\ninput_scale = nan", "'rules.RL201.input_scale' must be a finite number"),  # checked as before
    ("[rules.RL202]\ninput_scale = 1.0", "'rules.RL202': unknown option 'input_scale'"),
    ("marginz = 5", "unknown key 'marginz'; did you mean 'margins'?"),
    ("probz = true", "unknown key 'probz'; did you mean 'probe'?"),
]


@pytest.mark.parametrize(("line", "message"), BAD_FILE_VALUES)
def test_bad_values_in_the_file_name_the_file_and_the_key(tmp_path, line, message):
    config = tmp_path / "relulint.toml"
    config.write_text(line + "\n")
    one_error(*invoke(str(model(tmp_path)), "--no-probe", "--config", str(config)), f"{config}: ", message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('tool = "relulint"\n', "'tool' must be a table, got 'relulint'"),
        ("[tool]\nrelulint = 5\n", "'tool.relulint' must be a table, got 5"),
    ],
)
def test_a_pyproject_with_a_malformed_tool_table(tmp_path, monkeypatch, text, message):
    (tmp_path / "pyproject.toml").write_text(text)
    path = model(tmp_path)
    monkeypatch.chdir(tmp_path)
    one_error(*invoke(str(path), "--no-probe"), f"{tmp_path / 'pyproject.toml'}: {message}")  # found upward
    one_error(*invoke(str(path), "--config", "pyproject.toml"), message)


def test_a_configuration_that_is_a_named_pipe_is_refused_without_blocking(tmp_path):
    pipe = tmp_path / "relulint.toml"
    os.mkfifo(pipe)
    one_error(*invoke(str(model(tmp_path)), "--config", str(pipe)), "not a regular file")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--seed", "-1"), "'--seed' must be a whole number from 0"),
        (("--input-dist", "normal:.,."), "'--input-dist' must be normal"),
        (("--probe-memory", "100000000GB"), "'--probe-memory' is"),
        (("--probe-timeout", "nan"), "'--probe-timeout' must be a number of seconds"),
        (("--batch", "0"), "'--batch' must be a whole number"),
        (("--select", "RL801"), "'--select': no rule 'RL801'; did you mean RL701?"),
        (("--ignore", "RL2,RL88"), "'--ignore': no rule 'RL88'"),
        (("--input-range", "x=-inf,1"), "the range of 'x' must be finite"),
    ],
)
def test_bad_options_are_refused_before_any_analysis(tmp_path, args, message):
    one_error(*invoke(str(model(tmp_path)), *args), message)


def test_explain_suggests_the_closest_rule():
    one_error(*invoke("--explain", "rl5o1"), "no rule 'RL5O1'; did you mean RL501?")
    one_error(*invoke("--explain", "RL511"), "no rule 'RL511'; did you mean RL501?")


def test_paths_in_a_configuration_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    path = model(project / "models")
    old = model(project / "models", "old.onnx")
    (project / "relulint.toml").write_text('compare = "models/old.onnx"\nsarif-root = "."\n')
    monkeypatch.chdir(project / "models")
    config = load_config_file(project / "relulint.toml")
    assert Path(config.compare).resolve() == old.resolve()
    assert Path(config.sarif_root).resolve() == project.resolve()
    status, stdout, stderr = invoke(path.name, "--no-probe", "--format", "sarif")
    assert status in (0, 1), stderr
    assert json.loads(stdout)["runs"][0]["artifacts"][0]["location"]["uri"] == "models/m.onnx"


def test_model_wide_notes_do_not_fail_a_run_with_fail_on_note(tmp_path):
    path = str(model(tmp_path))
    status, stdout, _ = invoke(path, "--fail-on", "note", "--format", "json")
    findings = json.loads(stdout)["models"][0]["findings"]
    assert [f["rule"] for f in findings] == ["RL504"] and findings[0]["node"] is None  # synthetic inputs
    assert status == 0


def test_quiet_on_a_clean_model_prints_nothing(tmp_path):
    status, stdout, stderr = invoke(str(model(tmp_path)), "--no-probe", "-q")
    assert (status, stdout, stderr) == (0, "", "")


def test_a_probe_that_did_not_finish_is_exit_2_and_never_hidden(tmp_path):
    path = str(model(tmp_path))
    environment = {k: v for k, v in os.environ.items() if k != "RELULINT_DEBUG"}
    command = [sys.executable, "-m", "relulint", path, "-q", "--probe-timeout", "0.001"]
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith(f"relulint: error: {path}: the probe did not run: the probe did not finish")
    assert "did not finish within" in done.stdout  # -q keeps it
    configured = subprocess.run(
        [*command, "--probe-failure-status", "1", "--format", "json"], capture_output=True, text=True, env=environment
    )
    assert configured.returncode == 1 and configured.stderr.startswith("relulint: warning: ")
    (note,) = [n for n in json.loads(configured.stdout)["models"][0]["notes"] if n.get("unfinished")]
    assert note["kind"] == "skipped"


def test_internal_errors_have_their_own_status_and_ask_for_a_report(tmp_path, monkeypatch):
    monkeypatch.delenv("RELULINT_DEBUG")

    def broken(*arguments: object):
        raise RuntimeError("a defect")

    monkeypatch.setattr(relulint.engine, "build_graph", broken)
    status, stdout, stderr = invoke(str(model(tmp_path)), "--no-probe", "--format", "json")
    assert status == 3
    assert json.loads(stdout)["models"][0]["internal_error"] is True
    assert "internal error: RuntimeError: a defect; this is a bug in relulint" in stderr
    monkeypatch.setattr(relulint.cli, "run_models", broken)  # outside the engine's own guard
    status, stdout, stderr = invoke(str(model(tmp_path)), "--no-probe")
    assert status == 3 and stdout == ""
    assert stderr.startswith("relulint: internal error: RuntimeError: a defect; this is a bug in relulint")


def test_the_probe_gets_longer_by_default_with_real_data_and_the_given_limit_always_wins():
    from relulint.config import DATA_PROBE_TIMEOUT, SYNTHETIC_PROBE_TIMEOUT, Config

    assert Config().probe_seconds == SYNTHETIC_PROBE_TIMEOUT < DATA_PROBE_TIMEOUT == Config(data="x.npz").probe_seconds
    assert Config(data="x.npz", probe_timeout=7.0).probe_seconds == Config(probe_timeout=7.0).probe_seconds == 7.0


# ---- the analyses' own options ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {"input_scale": 1.0, "constant_tolerance": 1e-6}),
        # the keys these options had in the rules' tables, before the analysis had its own, mean the same
        (
            "[rules.RL201]\ninput_scale = 2.0\n[rules.RL102]\nstd_tolerance = 1e-3\n",
            {"input_scale": 2.0, "constant_tolerance": 1e-3},
        ),
        ("[margins]\ninput_scale = 3\n", {"input_scale": 3.0, "constant_tolerance": 1e-6}),
        # the analysis's table wins, whichever comes first
        (
            "[margins]\ninput_scale = 3.0\n[rules.RL201]\ninput_scale = 2.0\n",
            {"input_scale": 3.0, "constant_tolerance": 1e-6},
        ),
        (
            "[rules.RL201]\ninput_scale = 2.0\n[margins]\ninput_scale = 3.0\n",
            {"input_scale": 3.0, "constant_tolerance": 1e-6},
        ),
    ],
)
def test_the_margins_analysis_reads_its_table_and_the_keys_it_had_before(tmp_path, text, expected):
    path = tmp_path / "relulint.toml"
    path.write_text(text)
    options = load_config_file(path).options_of_analysis("margins")
    assert {name: options[name] for name in expected} == expected
    assert options["k"] == 3.0 and options["scale_tolerance"] == 1e-3


def test_the_margins_table_of_a_pyproject_moves_the_metrics(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.relulint.margins]\ninput_scale = 4.0\n")
    monkeypatch.chdir(tmp_path)
    status, stdout, _ = invoke(str(model(tmp_path)), "--no-probe", "--format", "json")
    units = json.loads(stdout)["models"][0]["units"]
    assert status in (0, 1) and units and all(unit["metrics"]["input_scale"] == 4.0 for unit in units[:1])


def test_the_readme_lists_every_analysis_option_with_its_default():
    from relulint.analysis_options import ANALYSIS_OPTIONS

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for analysis, options in ANALYSIS_OPTIONS.items():
        assert f"[tool.relulint.{analysis}]" in readme
        for option in options:
            assert f"`{option.name}` (default {option.default:g})" in readme, option.name
