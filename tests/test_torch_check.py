"""relulint.torch.check: a live module gets the CLI's findings, named by module path and source line."""

from __future__ import annotations

import inspect
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import jsonschema  # noqa: E402
import onnx  # noqa: E402

from relulint.torch import check  # noqa: E402
from relulint.torch.export import export  # noqa: E402

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv2(x)))


class Planted(nn.Module):
    """Dead units planted three ways: a negative bias (fc), a zeroed row (fc), a BatchNorm beta (layer3.1)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer3 = nn.Sequential(Block(), Block())
        self.fc = nn.Linear(8, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.layer3(x)
        x = x.mean((2, 3))
        return self.head(torch.relu(self.fc(x)))


def planted() -> Planted:
    torch.manual_seed(0)
    model = Planted()
    with torch.no_grad():
        model.fc.bias[:10] = -50.0
        model.fc.weight[10:12] = 0.0
        model.fc.bias[10:12] = -0.1
        model.layer3[1].bn.bias[:6] = -5.0
        for index in range(2):  # trained-looking running statistics, not the defaults
            model.layer3[index].bn.running_mean.uniform_(-0.1, 0.1)
            model.layer3[index].bn.running_var.uniform_(0.5, 2.0)
    return model


def line_of(cls: type, text: str) -> int:
    lines, first = inspect.getsourcelines(cls)
    return first + next(i for i, line in enumerate(lines) if text in line)


def cli_json(path: Path, *args: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "RELULINT_DEBUG"}
    done = subprocess.run(
        [sys.executable, "-m", "relulint", str(path), "--format", "json", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def comparable(findings: list[dict]) -> list[tuple]:
    return sorted(
        (f["rule"], f["severity"], f["evidence"].get("onnx_node", f["node"]), f["units"] and f["units"]["count"])
        for f in findings
    )


def test_same_findings_as_the_cli_on_the_exported_file_named_by_module(tmp_path):
    model = planted()
    example = torch.randn(4, 3, 16, 16)
    report = check(model, example)
    export(model, (example,), tmp_path / "planted.onnx", "torchscript")
    from_cli = cli_json(tmp_path / "planted.onnx")["models"][0]["findings"]
    from_check = report.to_json()["models"][0]["findings"]
    assert comparable(from_check) == comparable(from_cli)
    named = {(f.rule, f.node) for f in report.findings}
    assert ("RL201", "fc") in named  # the negative biases
    assert ("RL104", "fc") in named  # the zeroed rows
    assert ("RL501", "fc") in named
    assert ("RL202", "layer3.1.conv2") in named
    assert ("RL501", "layer3.1.conv2") in named
    assert not any(f.node.startswith("/") for f in report.findings if f.node)  # no ONNX node ids left
    rl201 = next(f for f in report.findings if f.rule == "RL201")
    assert rl201.evidence["module"] == "fc"
    assert rl201.evidence["source"]["line"] == line_of(Planted, "self.fc = ")
    assert Path(rl201.evidence["source"]["file"]).name == Path(__file__).name
    assert "Planted: fc [RL201]" in str(report)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter says it is legacy
def test_batchnorm_that_the_export_folds_is_judged_by_rl202():
    model = planted()
    example = torch.randn(2, 3, 16, 16)
    folded = io.BytesIO()
    model.eval()
    torch.onnx.export(model, (example,), folded, dynamo=False)  # the usual export: BatchNorm folded into Conv
    assert "BatchNormalization" not in {n.op_type for n in onnx.load_from_string(folded.getvalue()).graph.node}
    model.train()
    report = check(model, example, select=["RL2"])
    rl202 = [f for f in report.findings if f.rule == "RL202"]
    assert [f.node for f in rl202] == ["layer3.1.conv2"]
    assert rl202[0].units.count == 6
    assert model.training and model.layer3[0].bn.training  # the module's mode is restored


def test_healthy_batchnorm_gets_no_rl202():
    model = planted()
    with torch.no_grad():
        model.layer3[1].bn.bias.zero_()
    report = check(model, torch.randn(2, 3, 16, 16), select=["RL2"])
    assert not [f for f in report.findings if f.rule == "RL202"]


def test_real_data_from_a_dataloader_reaches_the_probe():
    model = planted()
    images = torch.rand(40, 3, 16, 16)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, torch.zeros(40)), batch_size=16, shuffle=False
    )
    report = check(model, images[:2], data=loader, select=["RL5"])
    rl501 = next(f for f in report.findings if f.rule == "RL501" and f.node == "fc")
    assert "40 samples of real data" in rl501.message
    assert not [f for f in report.findings if f.rule == "RL504"]  # no "synthetic inputs" caveat
    capped = check(model, images[:2], data=loader, select=["RL5"], samples=20)
    assert "20 samples of real data" in next(f for f in capped.findings if f.rule == "RL501").message
    # "auto" with data: the probe stops on its own within the data (it raised TypeError on "auto" - 0)
    auto = check(model, images[:2], data=loader, select=["RL5"], samples="auto")
    assert "40 samples of real data" in next(f for f in auto.findings if f.rule == "RL501" and f.node == "fc").message


def test_bad_options_and_data_are_refused():
    model = planted()
    example = torch.randn(2, 3, 16, 16)
    with pytest.raises(TypeError, match="compare"):
        check(model, example, compare="old.onnx")
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        check(model, example, colour=True)
    with pytest.raises(ValueError, match="no entry for input 'x'"):
        check(model, example, data=[{"image": example}])


def test_importing_relulint_never_imports_torch():
    code = "import sys, relulint, relulint.cli, relulint.engine; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_sarif_points_at_the_module_source_line(tmp_path):
    report = check(planted(), torch.randn(2, 3, 16, 16), sarif_root=str(Path(__file__).parent))
    written = report.write(tmp_path / "planted.sarif")
    document = json.loads(written.read_text(encoding="utf-8"))
    jsonschema.Draft4Validator(SCHEMA).validate(document)
    results = document["runs"][0]["results"]
    rl202 = next(r for r in results if r["ruleId"] == "RL202")
    location = rl202["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": Path(__file__).name, "uriBaseId": "%SRCROOT%"}
    assert location["region"]["startLine"] == line_of(Block, "self.conv2 = ")
    assert {"location": location["artifactLocation"]} in document["runs"][0]["artifacts"]
    # a model-wide note is a notification of the run, not an alert, and points at the root module's class
    assert not any(r["ruleId"] == "RL504" for r in results)
    notes = document["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    rl504 = next(n for n in notes if n.get("associatedRule", {}).get("id") == "RL504")
    location = rl504["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": Path(__file__).name, "uriBaseId": "%SRCROOT%"}
    assert location["region"]["startLine"] == inspect.getsourcelines(Planted)[1]


def test_dynamo_exporter_gives_the_same_findings_and_call_sites():
    pytest.importorskip("onnxscript")
    model = planted()
    example = torch.randn(4, 3, 16, 16)
    by_torchscript = check(model, example, select=["RL1", "RL2", "RL5"])
    by_dynamo = check(model, example, exporter="dynamo", select=["RL1", "RL2", "RL5"])

    def key(report):
        return sorted((f.rule, f.node, f.units and f.units.count) for f in report.findings)

    assert key(by_dynamo) == key(by_torchscript)
    rl202 = next(f for f in by_dynamo.findings if f.rule == "RL202")
    assert rl202.evidence["source"]["line"] == line_of(Block, "return self.relu(self.bn(self.conv2(x)))")
