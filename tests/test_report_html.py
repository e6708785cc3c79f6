"""--format html: one self-contained, escaped page; checked as text and in a real headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import relulint.rules
from relulint.config import Config
from relulint.engine import analyse
from relulint.findings import AffectedUnits, Finding, ModelResult, Note, Severity
from relulint.modelkit import ModelBuilder
from relulint.report import Run, render
from relulint.report.html import csp_hash, show
from relulint.report.text import clean
from relulint.rules import Rule, RuleMeta

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EVIL = "<script>alert(1)</script>"
IMG = '"><img src=x onerror="window.__pwned=1">'
CONTROL = "ctl\x1b[31m\x07\x0bend"
FAKE_RULES = (
    RuleMeta(id="RL196", name="test-dead-units", severity=Severity.ERROR, summary="Units that never switch on.",
             why="w", fix="f", needs=("probe",)),
    RuleMeta(id="RL195", name="test-weight-scale", severity=Severity.WARNING, summary="Weights off He.",
             why="w", fix="f"),
)  # fmt: skip


@pytest.fixture(autouse=True)
def fake_rules(monkeypatch):
    real = relulint.rules.all_rules()
    fakes = tuple(Rule(meta, lambda ctx, options: []) for meta in FAKE_RULES)
    monkeypatch.setattr(relulint.rules, "all_rules", lambda: (*real, *fakes))


def hostile_model(folder: Path) -> Path:
    """A model whose node names and producer try to inject markup and control characters."""
    b = ModelBuilder(seed=4, name="hostile")
    x = b.input("x", [1, 16])
    y = b.relu(b.gemm(x, 16, 32, name=f"{EVIL}_fc"), EVIL)
    y = b.relu(b.gemm(y, 32, 24, name="fc2", bias=np.full(24, -1.0, np.float32)), CONTROL)
    y = b.relu(b.gemm(y, 24, 24, name="fc3", weight=np.full((24, 24), 0.9, np.float32)), IMG)
    model = b.build([b.gemm(y, 24, 4, name="head")])
    model.producer_name = EVIL
    model.doc_string = f"doc {EVIL}"
    onnx.helper.set_model_props(model, {IMG: f"meta {EVIL}"})
    path = folder / "hostile <b>model&amp;.onnx"
    onnx.save(model, path)
    return path


def with_probe_numbers(result: ModelResult) -> ModelResult:
    """The real analysis plus what the probe and the rules would add: findings, dead fractions, unit rates."""
    rng = np.random.default_rng(0)
    layers, probe_layers = [], {}
    for index, (layer, dead) in enumerate(zip(result.layers, (0.0625, 0.75, 0.5))):
        units = layer["units"]
        rates = rng.uniform(0.0, 1.0, units)
        rates[: int(dead * units)] = 0.0
        rates[int(dead * units) : int(dead * units) + 2] = 0.004
        probe_layers[layer["name"]] = {"positive_rate": rates.round(4).tolist(), "dead": int(dead * units), "units": units}
        metrics = {**layer["metrics"], "dead_fraction": dead, "at_risk_fraction": [0.0, 0.6, 0.0][index],
                   "bias_margin_min": [0.1, -3.5, 0.0][index]}  # fmt: skip
        layers.append({**layer, "metrics": metrics})
    names = [layer["name"] for layer in result.layers]
    findings = [
        Finding("RL196", Severity.ERROR, f"75% of units never switched on; see `{names[1]}`", node=names[1],
                tensor=f"{names[1]}_out", units=AffectedUnits(18, 24, (0, 1, 2)), evidence={"dead": 18, "rate": 0.0},
                fix="Lower the `learning rate`."),
        Finding("RL196", Severity.WARNING, "half of the units never switched on", node=names[2],
                units=AffectedUnits(12, 24, (0,))),
        Finding("RL195", Severity.WARNING, f"weights of {EVIL} are off He", node=names[0]),
        Finding("RL195", Severity.NOTE, "model-wide remark about weights"),
    ]  # fmt: skip
    notes = [*result.notes, Note("skipped", f"layer {EVIL} has no weights the probe could read", names[0])]
    probe = {"inputs": "synthetic", "samples": 32, "batch": 8, "layers": probe_layers}
    return replace(result, layers=layers, findings=findings, notes=notes, extra={"probe": probe})


def sample_run(folder: Path) -> Run:
    hostile = with_probe_numbers(analyse(str(hostile_model(folder)), Config(probe=False)))
    example = analyse(str(EXAMPLES / "healthy_convnet.onnx"), Config(probe=False))
    missing = ModelResult(path=str(folder / f"{EVIL}.onnx"), error="no such file")
    return Run(results=[hostile, example, missing], config=Config(probe=False),
               started="2024-01-02T03:04:05Z", finished="2024-01-02T03:04:09Z")  # fmt: skip


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("html")
    mp = pytest.MonkeyPatch()  # the module-scoped page needs the fake rules too
    real = relulint.rules.all_rules()
    mp.setattr(relulint.rules, "all_rules", lambda: (*real, *(Rule(m, lambda c, o: []) for m in FAKE_RULES)))
    try:
        text = render("html", sample_run(folder))
    finally:
        mp.undo()
    path = folder / "report.html"
    path.write_text(text, encoding="utf-8")
    return path, text


@given(st.text())
def test_show_leaves_no_markup_and_no_control_character(text):
    shown = str(show(text))
    assert "<" not in shown and ">" not in shown and '"' not in shown
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\n\r]", shown)
    assert html.unescape(shown) == clean(text)  # the reader sees the text, control characters spelled out


# ---- the page as text ------------------------------------------------------------------------
def test_model_supplied_text_is_escaped_and_control_characters_are_visible(page):
    _, text = page
    assert EVIL not in text and "<img" not in text and "onerror=\"" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "hostile &lt;b&gt;model&amp;amp;.onnx" in text
    assert "doc &lt;script&gt;" in text and "meta &lt;script&gt;" in text  # doc string and metadata, escaped
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text)  # no raw control character
    assert "ctl\\x1b[31m\\x07\\x0bend" in text  # shown escaped instead
    parser = Elements()
    parser.feed(text)
    assert len(parser.scripts) == 1  # only the report's own script


def test_page_is_self_contained(page):
    _, text = page
    parser = Elements()
    parser.feed(text)
    for tag, attrs in parser.tags:
        assert "src" not in attrs or tag not in ("script", "img", "iframe", "audio", "video", "source", "embed"), tag
        if tag == "link":
            assert attrs.get("rel") == "icon" and attrs.get("href") == "data:,"
        if tag == "a":
            href = attrs.get("href") or ""
            assert href.startswith(("#", "https://github.com/relulint/relulint")), href
    assert "@import" not in text and "url(" not in text
    csp = next(a["content"] for t, a in parser.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp
    assert f"script-src '{csp_hash(parser.scripts[0])}'" in csp  # exactly this script may run


def test_every_finding_links_to_its_rule_page_and_each_model_has_a_section(page):
    _, text = page
    parser = Elements()
    parser.feed(text)
    rows = [a for t, a in parser.tags if t == "tr" and "data-rule" in a]
    assert [(r["data-rule"], r["data-severity"]) for r in rows[:4]] == [
        ("RL196", "error"), ("RL196", "warning"), ("RL195", "warning"), ("RL195", "note")
    ]  # fmt: skip
    links = {a["href"] for t, a in parser.tags if t == "a" and "rule-link" in (a.get("class") or "")}
    assert {"https://github.com/relulint/relulint/blob/main/rules/RL196.md",
            "https://github.com/relulint/relulint/blob/main/rules/RL195.md"} <= links  # fmt: skip
    sections = [a["id"] for t, a in parser.tags if t == "section" and "model" == a.get("class")]
    assert sections == ["model-1", "model-2", "model-3"]
    assert "This model could not be analysed" in text and "no such file" in text
    assert "<code>learning rate</code>" in text  # backticked spans of messages and fixes


def test_charts_show_dead_fractions_with_the_40_percent_line(page):
    _, text = page
    first = text.split('id="model-1"', 1)[1].split('id="model-2"', 1)[0]
    dead_chart = first.split("Dead units per layer", 1)[1].split("</figure>", 1)[0]
    bars = re.findall(r'<rect class="(bar-\w+)"[^>]*><title>([^<]*)</title>', dead_chart)
    assert [css for css, _ in bars] == ["bar-ok", "bar-bad", "bar-bad"]  # 6%, 75%, 50% against 40%
    assert bars[1][1] == "2. ctl\\x1b[31m\\x07\\x0bend: 75.0% dead"
    assert 'class="reference"' in dead_chart and ">40%<" in dead_chart
    he_chart = first.split("Weight std against He", 1)[1].split("</figure>", 1)[0]
    assert len(re.findall(r'<line class="marker"', he_chart)) == 3
    assert re.findall(r'<rect class="(bar-\w+)"', he_chart)[2] == "bar-warn"  # constant 0.9 weights: far above He
    second = text.split('id="model-2"', 1)[1].split('id="model-3"', 1)[0]
    assert "The probe did not run on this model" in second


def test_one_model_without_findings_or_layers(tmp_path):
    b = ModelBuilder(seed=0)
    x = b.input("x", [1, 4])
    onnx.save(b.build([b.gemm(x, 4, 2, name="only")]), tmp_path / "linear.onnx")
    run = Run(results=[analyse(str(tmp_path / "linear.onnx"), Config(probe=False))], config=Config(probe=False))
    text = render("html", run)
    assert "No findings" in text and "No ReLU-family activation in this model" in text
    assert 'class="overview"' not in text  # one model: no table of models


# ---- the page in Chromium --------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {CHROMIUM} or {CHROMEDRIVER} is missing (.ci/run installs them)")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="relulint-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def visible_rules(section) -> list[tuple[str, str]]:
    rows = section.find_elements("css selector", "tr.finding")
    return [(row.get_attribute("data-rule"), row.get_attribute("data-severity")) for row in rows if row.is_displayed()]


def test_page_in_chromium(page, browser, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.support.ui import Select

    path, _ = page
    url = path.as_uri()
    browser.get_log("browser")  # drop anything logged before this page
    browser.get_log("performance")
    browser.get(url)
    assert browser.title.startswith("relulint report")

    # nothing from the model ran as code, and the payloads show as text
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.execute_script("return window.__pwned === undefined")
    first = browser.find_element("id", "model-1")
    assert EVIL in first.find_element("css selector", "h2").text or EVIL in first.text
    assert "ctl\\x1b[31m\\x07\\x0bend" in first.text

    # filtering hides the right rows
    assert visible_rules(first) == [("RL196", "error"), ("RL196", "warning"), ("RL195", "warning"), ("RL195", "note")]
    first.find_element("css selector", ".sev-filter input[value='warning']").click()
    assert visible_rules(first) == [("RL196", "error"), ("RL195", "note")]
    assert first.find_element("css selector", ".shown").text == "2 of 4 shown"
    Select(first.find_element("css selector", "select.rule-filter")).select_by_value("RL195")
    assert visible_rules(first) == [("RL195", "note")]
    first.find_element("css selector", ".sev-filter input[value='note']").click()
    assert visible_rules(first) == []
    assert first.find_element("css selector", ".no-match").is_displayed()
    first.find_element("css selector", ".sev-filter input[value='warning']").click()
    first.find_element("css selector", ".sev-filter input[value='note']").click()
    Select(first.find_element("css selector", "select.rule-filter")).select_by_value("")
    first.find_element("css selector", "input.text-filter").send_keys("half of")
    assert visible_rules(first) == [("RL196", "warning")]
    first.find_element("css selector", "input.text-filter").clear()
    first.find_element("css selector", "input.text-filter").send_keys(" ")  # fires input; blank matches all
    assert len(visible_rules(first)) == 4

    # sorting by a column, both ways
    header = first.find_element("css selector", "table.findings-table th:nth-child(1) button")
    header.click()
    assert [s for _, s in visible_rules(first)] == ["note", "warning", "warning", "error"]
    header.click()
    assert [s for _, s in visible_rules(first)] == ["error", "warning", "warning", "note"]
    dead_header = first.find_element("css selector", "table.layers-table th:nth-child(5) button")
    dead_header.click()
    dead = [row.text.split("\n")[0] for row in first.find_elements("css selector", "table.layers-table tbody tr")]
    assert [d.split()[0] for d in dead] == ["1", "3", "2"]  # 6%, 50%, 75% dead

    # the page reported no error and asked for nothing
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    # chrome:// pages are the browser's own (its start page), never the report's
    leaving = {u for u in requested_urls(browser) if u != url and not u.startswith(("chrome://", "data:"))}
    assert leaving == set()

    browser.get(url)  # the report as it opens, for the picture
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(height + 120, 8000))
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
