"""The committed example reports in reports/ are what reports/make_reports.py makes today."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"


def load_script():
    spec = importlib.util.spec_from_file_location("make_reports", REPORTS / "make_reports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def normal_json(text: str) -> dict:
    document = json.loads(text)
    for key in ("started", "finished"):
        document.pop(key, None)
    document["tool"].pop("version", None)
    for model in document["models"]:
        for key in ("seconds", "peak_rss"):  # the probe's wall time and memory differ on every run
            (model.get("probe") or {}).pop(key, None)
    return document


def normal_sarif(text: str) -> dict:
    log = json.loads(text)
    for run in log["runs"]:
        run["tool"]["driver"].pop("version", None)
        run["tool"]["driver"].pop("semanticVersion", None)
        for invocation in run.get("invocations", []):
            for key in ("startTimeUtc", "endTimeUtc", "commandLine", "arguments"):
                invocation.pop(key, None)
    return log


def normal_html(text: str) -> str:
    text = re.sub(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(Z| UTC)", "TIME", text)
    text = re.sub(r'content="relulint [^"]+"', 'content="relulint VERSION"', text)
    return re.sub(r'<span class="version">[^<]*</span>', '<span class="version">VERSION</span>', text)


NORMALIZE = {".json": normal_json, ".sarif": normal_sarif, ".html": normal_html}


def test_committed_reports_match_a_fresh_run(tmp_path):
    script = load_script()
    fresh = script.make_reports(tmp_path)
    assert sorted(p.name for p in REPORTS.iterdir() if p.suffix in NORMALIZE) == sorted(p.name for p in fresh)
    for path in fresh:
        committed = (REPORTS / path.name).read_text(encoding="utf-8")
        normalize = NORMALIZE[path.suffix]
        assert normalize(path.read_text(encoding="utf-8")) == normalize(committed), (
            f"reports/{path.name} is out of date: run python reports/make_reports.py"
        )


def test_reports_cover_every_example_model_with_the_probe_asked_for():
    script = load_script()
    document = json.loads((REPORTS / "examples.json").read_text(encoding="utf-8"))
    assert [model["path"] for model in document["models"]] == script.models()
    assert "--probe" in script.command(REPORTS) and "--seed" in script.command(REPORTS)
    dying = next(m for m in document["models"] if m["path"].endswith("dying_mlp.onnx"))
    assert dying["summary"]["error"] > 0  # the reports show what a dying model looks like
    sarif = json.loads((REPORTS / "examples.sarif").read_text(encoding="utf-8"))
    uris = {a["location"]["uri"] for a in sarif["runs"][0]["artifacts"]}
    assert uris == set(script.models())  # relative to the repository root
