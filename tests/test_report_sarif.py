"""--format sarif: SARIF 2.1.0 that validates against the official schema and meets GitHub's code-scanning rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import jsonschema
import onnx
import pytest

import relulint.rules
from relulint.config import Config
from relulint.engine import analyse
from relulint.findings import AffectedUnits, Finding, ModelResult, Note, Severity
from relulint.modelkit import ModelBuilder
from relulint.outputs import git_top_level, repository_root
from relulint.report import Run, render
from relulint.report.sarif import MAX_RESULTS_PER_RUN, MAX_TAGS_PER_RULE, sarif_log
from relulint.rules import Rule, RuleMeta

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))

FAKE_RULES = (
    RuleMeta(
        id="RL198",
        name="test-weights",
        severity=Severity.WARNING,
        summary="A test rule about weights.",
        why="Weights matter.\n\nSecond paragraph.",
        fix="Fix the `weights`.",
        tags=tuple(f"tag{i}" for i in range(30)),
    ),
    RuleMeta(
        id="RL598",
        name="test-probe",
        severity=Severity.ERROR,
        summary="A test rule about dead units.",
        why="Dead units learn nothing.",
        fix="Revive them.",
        needs=("probe",),
    ),
)


@pytest.fixture(autouse=True)
def fake_rules(monkeypatch):
    """Two rules with known metadata next to the real ones, so these tests do not follow the catalogue."""
    real = relulint.rules.all_rules()
    fakes = tuple(Rule(meta, lambda ctx, options: []) for meta in FAKE_RULES)
    monkeypatch.setattr(relulint.rules, "all_rules", lambda: (*real, *fakes))


def validate(document: dict) -> None:
    jsonschema.Draft4Validator(SCHEMA).validate(document)


def save_model(folder: Path, name: str = "model.onnx") -> Path:
    b = ModelBuilder(seed=5)
    x = b.input("x", [1, 6])
    y = b.relu(b.gemm(x, 6, 8, name="fc1"), "act1")
    y = b.relu(b.gemm(y, 8, 8, name="fc2"), "act2")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save(b.build([b.gemm(y, 8, 2, name="head")]), path)
    return path


def with_findings(result: ModelResult, dead: int = 5) -> ModelResult:
    """The real analysis of a model plus findings of the test rules with chosen numbers."""
    findings = [
        Finding(
            "RL598",
            Severity.ERROR,
            f"{dead} of 8 units never switched on",
            node="act1",
            tensor="act1_out",
            units=AffectedUnits(dead, 8, (3, 1)),
            evidence={"dead": dead},
            fix="Revive them.",
        ),
        Finding("RL198", Severity.WARNING, "weights too small", node="fc2"),
        Finding("RL198", Severity.NOTE, "model-wide remark"),
    ]
    notes = [*result.notes, Note("skipped", "the probe did not run (test)"), Note("checker", "odd node", "fc2")]
    return replace(result, findings=findings, notes=notes)


def run_of(*results: ModelResult, root: Path | None = None) -> Run:
    config = Config(probe=False, sarif_root=str(root) if root else None)
    return Run(
        results=list(results),
        config=config,
        started="2024-01-02T03:04:05Z",
        finished="2024-01-02T03:04:06Z",
        command_line=["relulint", "models", "--format", "sarif"],
    )


def analysed(path: Path) -> ModelResult:
    return analyse(str(path), Config(probe=False))


def test_document_validates_and_results_carry_what_github_needs(tmp_path):
    model = save_model(tmp_path / "models")
    missing = ModelResult(path=str(tmp_path / "models" / "missing.onnx"), error="no such file")
    log = json.loads(render("sarif", run_of(with_findings(analysed(model)), missing, root=tmp_path)))
    validate(log)
    assert log["version"] == "2.1.0"
    (sarif_run,) = log["runs"]
    driver = sarif_run["tool"]["driver"]
    assert driver["name"] == "relulint" and driver["version"] and driver["informationUri"].startswith("https://")
    assert [rule["id"] for rule in driver["rules"]] == ["RL198", "RL598"]  # every rule used, once
    results = sarif_run["results"]
    assert [r["ruleId"] for r in results] == ["RL598", "RL198"]  # the model-wide note is a notification
    for result in results:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        assert physical["artifactLocation"]["uri"] == "models/model.onnx"
        assert physical["region"] == {"startLine": 1}
        assert result["message"]["text"]
    assert [r["level"] for r in results] == ["error", "warning"]
    assert results[0]["message"]["text"] == "act1: 5 of 8 units never switched on"
    assert results[0]["locations"][0]["logicalLocations"] == [
        {"name": "act1", "fullyQualifiedName": "act1", "kind": "function"}
    ]
    assert results[0]["properties"]["units"]["count"] == 5
    invocation = sarif_run["invocations"][0]
    assert invocation["executionSuccessful"] is False  # one model could not be read
    texts = [n["message"]["text"] for n in invocation["toolExecutionNotifications"]]
    assert any("missing.onnx: could not be analysed: no such file" in t for t in texts)
    assert any("skipped: the probe did not run (test)" in t for t in texts)
    levels = {n["message"]["text"].split(": ", 1)[1]: n["level"] for n in invocation["toolExecutionNotifications"]}
    assert levels["could not be analysed: no such file"] == "error"
    assert invocation["startTimeUtc"] == "2024-01-02T03:04:05Z"
    [model_wide] = [n for n in invocation["toolExecutionNotifications"] if "associatedRule" in n]
    assert model_wide["message"]["text"].endswith("model.onnx: RL198: model-wide remark")
    assert model_wide["level"] == "note"
    assert driver["rules"][model_wide["associatedRule"]["index"]]["id"] == "RL198"
    assert model_wide["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "models/model.onnx"


def test_rule_descriptors_have_help_levels_and_bounded_tags():
    log = sarif_log(run_of(with_findings(ModelResult(path="m.onnx"))))
    validate(log)
    rules = {rule["id"]: rule for rule in log["runs"][0]["tool"]["driver"]["rules"]}
    weights, probe = rules["RL198"], rules["RL598"]
    assert weights["name"] == "test-weights"
    assert weights["shortDescription"]["text"] == "A test rule about weights."
    assert weights["fullDescription"]["text"] == "Weights matter."
    assert weights["helpUri"] == "https://github.com/relulint/relulint/blob/main/rules/RL198.md"
    assert "Fix the `weights`." in weights["help"]["markdown"] and "Fix the `weights`." in weights["help"]["text"]
    assert weights["defaultConfiguration"]["level"] == "warning"
    assert probe["defaultConfiguration"]["level"] == "error"
    assert len(weights["properties"]["tags"]) == MAX_TAGS_PER_RULE  # GitHub rejects more than 20
    assert "initialization" in weights["properties"]["tags"] and "probe" in probe["properties"]["tags"]


def test_fingerprints_are_stable_across_runs_and_differ_between_nodes(tmp_path):
    model = save_model(tmp_path)
    first = sarif_log(run_of(with_findings(analysed(model), dead=5), root=tmp_path))
    again = sarif_log(run_of(with_findings(analysed(model), dead=7), root=tmp_path))  # other numbers, same problem
    prints = [r["partialFingerprints"] for r in first["runs"][0]["results"]]
    assert prints == [r["partialFingerprints"] for r in again["runs"][0]["results"]]
    assert first["runs"][0]["results"][0]["message"] != again["runs"][0]["results"][0]["message"]
    assert len({p["relulintFinding/v1"] for p in prints}) == len(prints)
    assert len({p["primaryLocationLineHash"] for p in prints}) == len(prints)
    # the same rule on two nodes, and two findings of one rule on one node, stay distinct
    base = analysed(model)
    twice = replace(
        base,
        findings=[
            Finding("RL198", Severity.WARNING, "a", node="fc1"),
            Finding("RL198", Severity.WARNING, "b", node="fc2"),
            Finding("RL198", Severity.WARNING, "c", node="fc2"),
        ],
    )
    hashes = [
        r["partialFingerprints"]["relulintFinding/v1"]
        for r in sarif_log(run_of(twice, root=tmp_path))["runs"][0]["results"]
    ]
    assert len(set(hashes)) == 3
    # and another model with the same finding on the same node is another alert
    other = save_model(tmp_path, "other.onnx")
    moved = sarif_log(run_of(with_findings(analysed(other), dead=5), root=tmp_path))
    assert moved["runs"][0]["results"][0]["partialFingerprints"] != prints[0]


def test_paths_are_relative_to_the_git_top_level_by_default(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    model = save_model(repo / "models" / "sub dir")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo / "models")
    root = repository_root(None)  # the command line finds the root; the renderer runs no git
    assert root == repo.resolve()
    log = sarif_log(replace(run_of(with_findings(analysed(Path("sub dir") / model.name))), root=root))
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "models/sub%20dir/model.onnx"  # a URI: the space is percent-encoded
    validate(log)


def test_outside_git_paths_are_relative_to_the_current_folder(tmp_path, monkeypatch):
    inside = save_model(tmp_path / "work" / "models")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # do not find a repository above tmp_path
    git_top_level.cache_clear()
    root = repository_root(None)
    assert root == (tmp_path / "work").resolve()
    log = sarif_log(replace(run_of(with_findings(analysed(inside))), root=root))
    assert [a["location"] for a in log["runs"][0]["artifacts"]] == [
        {"uri": "models/model.onnx", "uriBaseId": "%SRCROOT%"}
    ]
    validate(log)


def test_cli_refuses_a_sarif_report_for_a_model_outside_its_root(tmp_path):
    inside = save_model(tmp_path / "repo")
    outside = save_model(tmp_path / "elsewhere")
    env = {k: v for k, v in os.environ.items() if k != "RELULINT_DEBUG"}
    done = subprocess.run(
        [sys.executable, "-m", "relulint", str(inside), str(outside), "--no-probe", "--format", "sarif"]
        + ["--sarif-root", str(tmp_path / "repo")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"relulint: error: {outside}: lies outside the SARIF root '{(tmp_path / 'repo').resolve()}' "
        "(the git top level or --sarif-root); give a --sarif-root that holds every model\n"
    )


def test_results_over_githubs_limit_are_cut_with_a_notification():
    findings = [Finding("RL198", Severity.NOTE, f"note {i}", node=f"n{i}") for i in range(MAX_RESULTS_PER_RUN - 2)]
    findings += [Finding("RL598", Severity.ERROR, f"error {i}", node=f"e{i}") for i in range(5)]
    result = ModelResult(path="big.onnx", findings=findings)
    log = sarif_log(run_of(result))
    results = log["runs"][0]["results"]
    assert len(results) == MAX_RESULTS_PER_RUN
    assert sum(r["level"] == "error" for r in results) == 5  # the most severe are kept
    assert results[-1]["message"]["text"] == "e4: error 4"  # in their original order
    (notice,) = [
        n for n in log["runs"][0]["invocations"][0]["toolExecutionNotifications"] if "left out" in n["message"]["text"]
    ]
    assert notice["message"]["text"].startswith("3 findings were left out")


def test_model_supplied_names_stay_data(tmp_path):
    node = 'evil"\n::error::<script>alert(1)</script>\x1b[31m'
    result = ModelResult(path=str(tmp_path / "m.onnx"), findings=[Finding("RL198", Severity.WARNING, "x", node=node)])
    text = render("sarif", run_of(result, root=tmp_path))
    log = json.loads(text)
    validate(log)
    location = log["runs"][0]["results"][0]["locations"][0]["logicalLocations"][0]
    assert location["fullyQualifiedName"] == node
    assert "\x1b" not in text and "\n::error" not in text  # JSON escapes control characters


def test_cli_writes_sarif_with_sarif_root(tmp_path):
    model = save_model(tmp_path / "repo" / "nets")
    out = tmp_path / "out.sarif"
    env = {k: v for k, v in os.environ.items() if k != "RELULINT_DEBUG"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "relulint",
            str(model),
            "--no-probe",
            "-o",
            str(out),
            "--sarif-root",
            str(tmp_path / "repo"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr
    log = json.loads(out.read_text(encoding="utf-8"))
    validate(log)
    assert log["runs"][0]["artifacts"][0]["location"]["uri"] == "nets/model.onnx"
    assert log["runs"][0]["invocations"][0]["executionSuccessful"] is True


def test_synthetic_input_notes_are_run_notifications_not_alerts(tmp_path):
    """RL504 (and RL503 at note level) say something about the run on every model: as results they would be
    alerts on every model that never close. A warning-level RL503 stays a result."""
    model = save_model(tmp_path / "models")
    result = analyse(str(model), Config(batch=4, samples=8))
    rules = {f.rule: f for f in result.findings}
    assert "RL504" in rules and rules["RL504"].node is None, [f.rule for f in result.findings]
    warning = Finding("RL503", Severity.WARNING, "60% of the network's units are dead")
    log = json.loads(render("sarif", run_of(replace(result, findings=[*result.findings, warning]), root=tmp_path)))
    validate(log)
    (sarif_run,) = log["runs"]
    assert "RL504" not in [r["ruleId"] for r in sarif_run["results"]]
    assert [r["level"] for r in sarif_run["results"] if r["ruleId"] == "RL503"] == ["warning"]
    associated = [
        n["associatedRule"]["id"]
        for n in sarif_run["invocations"][0]["toolExecutionNotifications"]
        if "associatedRule" in n
    ]
    assert "RL504" in associated
