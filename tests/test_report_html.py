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
from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import relulint.rules
from relulint.analyses import Analyses
from relulint.compare_result import CompareResult, LayerChange, ProbeFeeding
from relulint.config import Config, load_config_file
from relulint.engine import analyse
from relulint.findings import AffectedUnits, Finding, ModelResult, Note, Severity
from relulint.modelkit import ModelBuilder
from relulint.probe.result import LayerMeasure, ProbeResult
from relulint.report import Run, render
from relulint.report.html.charts import log_range
from relulint.report.html.format import show
from relulint.report.html.page import csp_hash
from relulint.report.text import clean
from relulint.rules import Rule, RuleMeta

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EVIL = "<script>alert(1)</script>"
IMG = '"><img src=x onerror="window.__pwned=1">'
CONTROL = "ctl\x1b[31m\x07\x0bend"
FAKE_RULES = (
    RuleMeta(
        id="RL196",
        name="test-dead-units",
        severity=Severity.ERROR,
        summary="Units that never switch on.",
        why="w",
        fix="f",
        needs=("probe",),
    ),
    RuleMeta(
        id="RL195", name="test-weight-scale", severity=Severity.WARNING, summary="Weights off He.", why="w", fix="f"
    ),
)


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
        positions = 10_000  # the rates, to 4 decimals, as counts of positive values
        probe_layers[layer["name"]] = LayerMeasure(
            layer["name"], units, 32, positions, np.round(rates * positions), *np.zeros((3, units))
        )
        metrics = {
            **layer["metrics"],
            "dead_fraction": dead,
            "at_risk_fraction": [0.0, 0.6, 0.0][index],
            "bias_margin_min": [0.1, -3.5, 0.0][index],
        }
        layers.append({**layer, "metrics": metrics})
    names = [layer["name"] for layer in result.layers]
    findings = [
        Finding(
            "RL196",
            Severity.ERROR,
            f"75% of units never switched on; see `{names[1]}`",
            node=names[1],
            tensor=f"{names[1]}_out",
            units=AffectedUnits(18, 24, (0, 1, 2)),
            evidence={"dead": 18, "rate": 0.0},
            fix="Lower the `learning rate`.",
        ),
        Finding(
            "RL196",
            Severity.WARNING,
            "half of the units never switched on",
            node=names[2],
            units=AffectedUnits(12, 24, (0,)),
        ),
        Finding("RL195", Severity.WARNING, f"weights of {EVIL} are off He", node=names[0]),
        Finding("RL195", Severity.NOTE, "model-wide remark about weights"),
    ]
    notes = [*result.notes, Note("skipped", f"layer {EVIL} has no weights the probe could read", names[0])]
    probe = ProbeResult("synthetic", 32, 8, probe_layers)
    return replace(result, layers=layers, findings=findings, notes=notes, analyses=Analyses(probe=probe))


# ---- two checkpoints of one hostile model, for the comparison and the proofs ----------------------
LAYER_NAMES = (EVIL, CONTROL, IMG)  # the activations' names; their Gemms are named f"{name}_fc"
WIDTHS = (16, 24, 24, 24)
DOMAIN = {"x": ((-1.0, 1.0),)}
KILLED, REVIVED = 12, 4  # units of layers 2 and 3 whose bias is -1000 in NEW and in OLD


def checkpoint(weights: list[np.ndarray], biases: list[np.ndarray]) -> onnx.ModelProto:
    """Gemm+ReLU layers with the hostile names, then a linear head; initializer names stay the same."""
    b = ModelBuilder(seed=0, name="checkpoint")
    y = b.input("x", [1, WIDTHS[0]])
    for name, weight, bias in zip(LAYER_NAMES, weights, biases):
        y = b.relu(b.gemm(y, weight.shape[1], weight.shape[0], weight=weight, bias=bias, name=f"{name}_fc"), name)
    head = np.full((4, WIDTHS[-1]), 0.1, np.float32)
    return b.build([b.gemm(y, WIDTHS[-1], 4, weight=head, name="head")])


def checkpoints(folder: Path) -> tuple[Path, Path]:
    """(NEW, OLD), with changes known in advance: layer 1 is unchanged; layer 2 has its weights x1.1
    (relative update 0.1) and 12 of 24 units killed by a bias of -1000; layer 3 has its weights x3
    (relative update 2.0, above RL702's bound 1) and 4 units revived that OLD had at -1000."""
    rng = np.random.default_rng(3)
    weights = [(rng.standard_normal((o, i)) * np.sqrt(2 / i)).astype(np.float32) for i, o in pairwise(WIDTHS)]
    old_biases = [np.zeros(n, np.float32) for n in WIDTHS[1:]]
    old_biases[2][:REVIVED] = -1000.0
    new_biases = [np.zeros(n, np.float32) for n in WIDTHS[1:]]
    new_biases[1][:KILLED] = -1000.0
    new_weights = [weights[0], weights[1] * np.float32(1.1), weights[2] * np.float32(3.0)]
    old, new = folder / "old <i>ckpt&amp;.onnx", folder / "new.onnx"
    onnx.save(checkpoint(weights, old_biases), old)
    onnx.save(checkpoint(new_weights, new_biases), new)
    return new, old


def compared(folder: Path) -> ModelResult:
    new, old = checkpoints(folder)
    return analyse(str(new), Config(probe=False, compare=str(old), input_ranges=DOMAIN))


def sample_run(folder: Path) -> Run:
    hostile = with_probe_numbers(analyse(str(hostile_model(folder)), Config(probe=False)))
    example = analyse(str(EXAMPLES / "healthy_convnet.onnx"), Config(probe=False))
    missing = ModelResult(path=str(folder / f"{EVIL}.onnx"), error="no such file")
    return Run(
        results=[hostile, example, missing, compared(folder)],
        config=Config(probe=False),
        started="2024-01-02T03:04:05Z",
        finished="2024-01-02T03:04:09Z",
    )


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
    assert EVIL not in text and "<img" not in text and 'onerror="' not in text
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
        ("RL196", "error"),
        ("RL196", "warning"),
        ("RL195", "warning"),
        ("RL195", "note"),
    ]
    links = {a["href"] for t, a in parser.tags if t == "a" and "rule-link" in (a.get("class") or "")}
    assert {
        "https://github.com/relulint/relulint/blob/main/rules/RL196.md",
        "https://github.com/relulint/relulint/blob/main/rules/RL195.md",
    } <= links
    sections = [a["id"] for t, a in parser.tags if t == "section" and "model" == a.get("class")]
    assert sections == ["model-1", "model-2", "model-3", "model-4"]
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
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
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
        _ = browser.switch_to.alert.text
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

    # the comparison with OLD: its table sorts, its charts are drawn
    compared = browser.find_element("id", "model-4-compare")
    assert len(compared.find_elements("css selector", "figure.chart svg")) == 2
    compared.find_element("css selector", "table.compare-table th:nth-child(7) button").click()  # Update
    updates = [row.text.split()[0] for row in compared.find_elements("css selector", "table.compare-table tbody tr")]
    assert updates == ["1", "2", "3"]  # 0, 0.1, 2
    compared.find_element("css selector", "table.compare-table th:nth-child(5) button").click()  # Newly dead
    compared.find_element("css selector", "table.compare-table th:nth-child(5) button").click()
    newly = [row.text.split()[0] for row in compared.find_elements("css selector", "table.compare-table tbody tr")]
    assert newly[0] == "2"  # 12 newly dead first

    # the page reported no error and asked for nothing, with the comparison too
    assert [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")] == []
    assert {u for u in requested_urls(browser) if u != url and not u.startswith(("chrome://", "data:"))} == set()

    for scheme in ("light", "dark"):  # the report as it opens, for the pictures, in both colour schemes
        browser.execute_cdp_cmd(
            "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
        )
        browser.get(url)
        background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == {"light": "rgb(246, 247, 249)", "dark": "rgb(17, 20, 24)"}[scheme]
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(height + 120, 8000))
        shot = tmp_path / f"report-{scheme}.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        section = tmp_path / f"compare-{scheme}.png"
        assert browser.find_element("id", "model-4-compare").screenshot(str(section))
        assert section.stat().st_size > 10_000
    assert [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")] == []
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


# ---- checkpoint comparison and proofs ----------------------------------------------------------
class TableCells(HTMLParser):
    """The text of every body cell of the tables in a fragment, row by row, whitespace collapsed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_rows(fragment: str) -> list[list[str]]:
    parser = TableCells()
    parser.feed(fragment)
    return parser.rows


def compare_block(text: str) -> str:
    fourth = text.split('id="model-4"', 1)[1]
    return fourth.split('<section class="card compare"', 1)[1].split("</section>", 1)[0]


def svg_bars(figure: str) -> list[tuple[str, float, str]]:
    """(class, height, title) of every bar of one chart."""
    found = re.findall(
        r'<rect class="(bar-\w+)" x="[^"]*" y="[^"]*" width="[^"]*" height="([^"]*)" rx="2"><title>([^<]*)</title>',
        figure,
    )
    return [(css, float(height), html.unescape(title)) for css, height, title in found]


def figures(fragment: str) -> dict[str, str]:
    """Each chart of a fragment by its title."""
    return {
        re.search(r"<strong>([^<]*)</strong>", figure).group(1): figure
        for figure in re.findall(r'<figure class="chart">.*?</figure>', fragment, re.DOTALL)
    }


PLOT_HEIGHT = 176  # Chart(): 270 high, 14 above and 80 below the plot (the slanted layer names)


def test_comparison_section_shows_old_against_new_per_layer(page):
    _, text = page
    block = compare_block(text)
    assert "Compared with OLD" in block and "3 layers matched by name" in block
    assert "old &lt;i&gt;ckpt&amp;amp;.onnx" in block  # OLD's path, escaped
    assert "proof</dd>" not in block and ">proof <span" in block  # the proof counts dead units (no probe ran)
    assert "x ∈ [-1, 1]" in block
    facts = dict(re.findall(r"<dt>([^<]*)</dt><dd[^>]*>(.*?)</dd>", block))
    assert facts["Died since OLD"] == "12 units" and facts["Revived"] == "4 units"
    assert facts["Largest update"].startswith("2 <span")  # layer 3's weights x3
    assert table_rows(block) == [
        ["1", EVIL, "24", "0.0% → 0.0% 0 → 0 units static margins: 0 → 0", "0", "0", "0‖W‖ 7.02 → 7.02", "0σmean 0σ"],
        [
            "2",
            clean(CONTROL),
            "24",
            "0.0% → 50.0% 0 → 12 units static margins: 0 → 12",
            "12",
            "0",
            "0.1‖W‖ 6.89 → 7.58",
            "-932.93σmean -372.12σ",
        ],
        [
            "3",
            IMG,
            "24",
            "16.7% → 0.0% 4 → 0 units static margins: 4 → 0",
            "0",
            "4",
            "2‖W‖ 6.46 → 19.39",
            "0σmean 112.97σ",
        ],
    ]
    # layer 3's update is above RL702's bound, layer 2's bias dropped by more than RL703's 1 sigma
    assert re.search(r'<td class="num warn" data-sort="2.0">', block)
    assert re.search(r'<td class="num warn" data-sort="-932.934726">', block)
    assert '<span class="new bad">50.0%</span>' in block


def test_comparison_charts_pair_old_with_new_and_mark_the_bounds(page):
    _, text = page
    charts = figures(compare_block(text))
    assert list(charts) == ["Dead units: OLD against NEW", "Relative weight update per layer"]
    dead = svg_bars(charts["Dead units: OLD against NEW"])
    assert [(css, round(height, 2)) for css, height, _ in dead] == [
        ("bar-old", 1.5),
        ("bar-ok", 1.5),  # layer 1: nothing dead, drawn as slivers
        ("bar-old", 1.5),
        ("bar-bad", 0.5 * PLOT_HEIGHT),  # layer 2: 12 of 24 killed, over the 40% line
        ("bar-old", round(PLOT_HEIGHT * 0.166667, 2)),
        ("bar-ok", 1.5),  # layer 3: 4 revived
    ]
    assert dead[3][2] == f"2. {clean(CONTROL)}: 50.0% dead in NEW (12 of 24), 12 newly dead"
    assert dead[4][2] == f"3. {IMG}: 16.7% dead in OLD (4 of 24)"
    assert (
        'class="reference"' in charts["Dead units: OLD against NEW"]
        and ">40%<" in charts["Dead units: OLD against NEW"]
    )

    update = charts["Relative weight update per layer"]
    bars = svg_bars(update)
    # log axis from 0.01 to 10 (three decades): 0.1 is a third up, 2 is (log10(2) + 2) / 3 up
    assert re.findall(r'<text class="axis" [^>]*text-anchor="end">([^<]*)</text>', update) == ["0.01", "0.1", "1", "10"]
    assert [(css, round(height, 2)) for css, height, _ in bars] == [
        ("bar-ok", 1.5),
        ("bar-ok", round(PLOT_HEIGHT / 3, 2)),
        ("bar-warn", round(PLOT_HEIGHT * (np.log10(2) + 2) / 3, 2)),
    ]
    assert bars[0][2] == f"1. {EVIL}: ‖ΔW‖/‖W_old‖ = 0 (unchanged)"
    assert bars[2][2] == f"3. {IMG}: ‖ΔW‖/‖W_old‖ = 2"
    reference = re.search(r'<line class="reference" x1="[^"]*" y1="([^"]*)"', update)
    assert float(reference.group(1)) == pytest.approx(14 + PLOT_HEIGHT / 3, abs=0.01)  # at 1, two decades up
    assert "bound 1</text>" in update and "RL702 bound 1</li>" in update  # label right of the plot, legend


def test_proofs_show_their_domain_and_a_proven_dead_column(page):
    _, text = page
    fourth = text.split('id="model-4"', 1)[1]
    facts = dict(re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", fourth.split("</dl>", 1)[0]))
    assert facts["Input domain"] == "x ∈ [-1, 1]" and facts["Bounds"] == "interval+symbolic"
    assert facts["Compared with"].endswith("old &lt;i&gt;ckpt&amp;amp;.onnx")
    layers = fourth.split('class="data sortable layers-table"', 1)[1].split("</table>", 1)[0]
    assert "Proven dead" in layers
    assert [row[6] for row in table_rows(layers)] == ["0.0%", "50.0%", "0.0%"]
    first = text.split('id="model-1"', 1)[1].split('id="model-2"', 1)[0]
    assert "Proven dead" not in first and "Compared with" not in first  # neither ran there


def compared_result(compare: CompareResult, names=("a", "b")) -> Run:
    layers = [{"name": name, "units": 8, "metrics": {}} for name in names]
    result = ModelResult(path="new.onnx", sha256="0" * 64, layers=layers, analyses=Analyses(compare=compare))
    return Run(results=[result], config=Config(probe=False))


def test_the_probe_counts_dead_units_first_and_a_layer_without_it_says_which_source_did():
    alive, half_dead = np.zeros(8, bool), np.arange(8) < 4  # 0 -> 4 of 8 units dead
    by_probe_and_proof = LayerChange(
        "a",
        8,
        relative_update=0.5,
        dead_old={"probe": alive, "proof": alive},
        dead_new={"probe": half_dead, "proof": half_dead},
    )
    by_proof = LayerChange("b", 8, dead_old={"proof": alive}, dead_new={"proof": half_dead})
    compare = CompareResult(
        "old.onnx",
        "1" * 64,
        same_file=False,
        layers={"b": by_proof, "a": by_probe_and_proof},
        probe_inputs=ProbeFeeding("synthetic", 32, 16, "32 samples <x>"),
    )
    text = render("html", compared_result(compare))
    block = text.split('<section class="card compare"', 1)[1].split("</section>", 1)[0]
    assert "32 samples &lt;x&gt; (16 samples for OLD)" in block
    rows = table_rows(block)
    assert [row[1] for row in rows] == ["a", "b"]  # in the Layers table's order, not the JSON's
    assert rows[0][3] == "0.0% → 50.0% 0 → 4 units proof: 0 → 4"
    assert rows[1][3] == "0.0% → 50.0% 0 → 4 units · by the proof"
    assert rows[1][6] == "—"  # no update measured
    titles = [title for _, _, title in svg_bars(figures(block)["Dead units: OLD against NEW"])]
    assert titles[3] == "2. b: 50.0% dead in NEW (4 of 8) (by the proof), 4 newly dead"
    assert len(svg_bars(figures(block)["Relative weight update per layer"])) == 1
    assert 'Died since OLD</dt><dd class="bad">8 units' in block


def test_identical_checkpoints_and_nothing_measured_say_so():
    compare = CompareResult("new.onnx", "0" * 64, same_file=True, layers={"a": LayerChange("a", 8)})
    text = render("html", compared_result(compare, names=("a",)))
    assert "OLD and NEW are the same file" in text
    assert "Dead units could not be counted in both checkpoints" in text
    assert "No layer has weights that could be compared" in text
    assert ">none <span" in text  # no source counted dead units


@pytest.mark.parametrize(
    ("values", "bound", "expected"),
    [
        ([0.1, 2.0], 1.0, (-2, 1)),  # at least three decades, the bound a decade under the top
        ([0.001, 0.02], 1.0, (-3, 1)),
        ([50.0], 1.0, (-1, 2)),
        ([1e-12, 3.0], 1.0, (-5, 1)),  # at most six decades: tinier updates sit on the floor
        ([], 1.0, (-2, 1)),  # only zeros: the axis still shows the bound
        ([0.3], 0.0, (-3, 0)),  # no bound
    ],
)
def test_log_axis_of_the_update_chart(values, bound, expected):
    assert log_range(values, bound) == expected


# ---- thresholds from the rules' options, narrow and wide windows, one RL701 number ------------------
def chart_geometry(browser, chart_index: int = 0) -> dict:
    """The dashed line's height as a fraction of the plot, and the bars' classes, of one chart of model 1."""
    return browser.execute_script(
        """
        const svg = document.querySelectorAll('#model-1 > .charts figure.chart svg')[arguments[0]];
        const axis = svg.querySelector('line.axis-line'), line = svg.querySelector('line.reference');
        const grid = [...svg.querySelectorAll('line.grid')].map(g => g.getBoundingClientRect().y);
        const top = Math.min(...grid), bottom = axis.getBoundingClientRect().y;
        return {
            line: line ? (bottom - line.getBoundingClientRect().y) / (bottom - top) : null,
            bars: [...svg.querySelectorAll('rect')].map(r => r.getAttribute('class')),
            bad_cells: document.querySelectorAll('#model-1 table.layers-table td.bad').length,
        };
        """,
        chart_index,
    )


def test_the_dead_line_moves_with_rl501_error_fraction_in_the_config(browser, tmp_path):
    result = with_probe_numbers(analyse(str(hostile_model(tmp_path)), Config(probe=False)))  # 6%, 75%, 50% dead
    (tmp_path / "relulint.toml").write_text("[rules.RL501]\nerror_fraction = 0.6\n", encoding="utf-8")
    configured = load_config_file(tmp_path / "relulint.toml")
    seen = {}
    for name, config in (("default", Config(probe=False)), ("configured", configured)):
        path = tmp_path / f"{name}.html"
        path.write_text(render("html", Run(results=[result], config=config)), encoding="utf-8")
        browser.get(path.as_uri())
        seen[name] = chart_geometry(browser)
    assert seen["default"]["line"] == pytest.approx(0.40, abs=0.01)
    assert seen["default"]["bars"] == ["bar-ok", "bar-bad", "bar-bad"] and seen["default"]["bad_cells"] == 2
    assert seen["configured"]["line"] == pytest.approx(0.60, abs=0.01)
    assert seen["configured"]["bars"] == ["bar-ok", "bar-bad", "bar-ok"] and seen["configured"]["bad_cells"] == 1
    text = (tmp_path / "configured.html").read_text(encoding="utf-8")
    assert "RL501&#39;s error_fraction, 60%" in text and ">60%<" in text


def test_the_weight_band_is_rl101s(tmp_path):
    result = analyse(str(hostile_model(tmp_path)), Config(probe=False))
    stds = [(u["metrics"]["weight_std"], u["metrics"]["he_std"]) for u in result.layers]
    ratio = stds[0][0] / stds[0][1]  # layer 1: He-initialized, so near 1
    for max_ratio, expected in ((4.0, "bar-ok"), (ratio * 0.9, "bar-warn")):
        config = Config(probe=False, rule_options={"RL101": {"max_ratio": max_ratio}})
        he = figures(render("html", Run(results=[result], config=config)))["Weight std against He initialization"]
        assert svg_bars(he)[0][0] == expected
        assert f"above {max_ratio:g}× He" in he


def long_named_model(folder: Path, layers: int = 40) -> Path:
    b = ModelBuilder(seed=1, name="long names")
    y = b.input("x", [1, 8])
    for i in range(layers):
        name = f"/model/encoder/layers.{i}/feed_forward/intermediate/activation_fn/Relu_output_{i}"
        y = b.relu(b.gemm(y, 8, 8, name=f"{name}/MatMul"), name)
    path = folder / "long.onnx"
    onnx.save(b.build([b.gemm(y, 8, 2, name="head")]), path)
    return path


def test_a_long_layer_table_fits_at_1400_px_and_the_axes_name_the_layers(browser, tmp_path):
    result = analyse(str(long_named_model(tmp_path)), Config(probe=False))
    path = tmp_path / "long.html"
    path.write_text(render("html", Run(results=[result], config=Config(probe=False))), encoding="utf-8")
    browser.set_window_size(1400, 1000)
    browser.get(path.as_uri())
    fits = browser.execute_script(
        """
        const wrap = document.querySelector('#model-1 .layers .table-wrap');
        return [wrap.scrollWidth <= wrap.clientWidth, document.documentElement.scrollWidth <= window.innerWidth];
        """
    )
    assert fits == [True, True]
    labels = browser.execute_script(
        """
        const svg = document.querySelectorAll('#model-1 figure.chart svg')[0];
        const box = svg.closest('figure').getBoundingClientRect();
        return [...svg.querySelectorAll('text.x-name')].map(t => {
            const r = t.getBoundingClientRect();
            return {text: t.lastChild.textContent, title: t.querySelector('title').textContent,
                    left: r.left - box.left, right: box.right - r.right, x: r.left, x2: r.right, y: r.top, y2: r.bottom};
        });
        """
    )
    assert len(labels) == 20  # 40 layers: every second name
    first = labels[0]
    assert first["title"] == "1. /model/encoder/layers.0/feed_forward/intermediate/activation_fn/Relu_output_0"
    assert first["text"] == "…lu_output_0" and labels[1]["text"] == "…lu_output_2"  # the ends tell them apart
    assert all(label["left"] >= 0 and label["right"] >= 0 for label in labels)  # inside the chart's card
    for a, b in pairwise(labels):  # slanted labels do not run into each other: each starts right of the last's start
        assert b["x"] > a["x"] and not (
            b["x"] < a["x2"] and b["y"] < a["y2"] and a["y"] < b["y2"] and b["x2"] < a["x2"]
        )


def test_a_420_px_window_shows_findings_as_readable_cards(page, browser):
    path, _ = page
    # a phone's viewport (a headless window is at least 500 px wide, so the metrics are emulated)
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 420, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    )
    try:
        browser.get(path.as_uri())
        seen = browser.execute_script(
            """
            const width = window.innerWidth;
            const rows = [...document.querySelectorAll('#model-1 tr.finding')];
            const messages = rows.map(r => r.querySelector('td.message').getBoundingClientRect());
            const svg = document.querySelector('#model-1 figure.chart svg');
            return {
                page_fits: document.documentElement.scrollWidth <= width,
                header_hidden: getComputedStyle(document.querySelector('#model-1 .findings-table thead')).display,
                cards: rows.map(r => getComputedStyle(r).display),
                inside: messages.every(m => m.left >= 0 && m.right <= width),
                narrowest: Math.min(...messages.map(m => m.width)),
                font: parseFloat(getComputedStyle(svg.querySelector('text.axis')).fontSize)
                      * svg.getBoundingClientRect().width / svg.viewBox.baseVal.width,
            };
            """
        )
        assert seen["page_fits"] and seen["header_hidden"] == "none"
        assert seen["cards"] == ["grid"] * 4 and seen["inside"]
        assert seen["narrowest"] > 300  # the message has the card's whole width, not a squeezed column
        assert seen["font"] >= 9  # chart labels stay readable: the plot scrolls inside its card instead
        browser.find_element("css selector", "#model-1 .sev-filter input[value='warning']").click()
        hidden = browser.execute_script(
            "return [...document.querySelectorAll('#model-1 tr.finding')].map(r => getComputedStyle(r).display)"
        )
        assert hidden == ["grid", "none", "none", "grid"]  # the filter still hides cards
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_rl701_says_the_number_the_comparison_table_shows(browser, tmp_path):
    """The probe and the static margins disagree on six units of layer 2 (a bias of -0.05 puts them under
    the margins analysis's k = 0.01 but the probe sees them fire): RL701, the table and the facts count by the probe."""
    rng = np.random.default_rng(3)
    weights = [(rng.standard_normal((o, i)) * np.sqrt(2 / i)).astype(np.float32) for i, o in pairwise(WIDTHS)]
    old_biases = [np.zeros(n, np.float32) for n in WIDTHS[1:]]
    new_biases = [np.zeros(n, np.float32) for n in WIDTHS[1:]]
    new_biases[1][:KILLED] = -1000.0
    new_biases[1][KILLED : KILLED + 6] = -0.05
    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    onnx.save(checkpoint(weights, old_biases), old)
    onnx.save(checkpoint(weights, new_biases), new)
    config = Config(compare=str(old), samples=256, analysis_options={"margins": {"k": 0.01}})
    result = analyse(str(new), config)
    layer = result.analyses.to_json()["compare"]["layers"][CONTROL] if "compare" in result.analyses.to_json() else None
    assert layer is not None and layer["probe"]["newly_dead"] == KILLED and layer["margins"]["newly_dead"] > KILLED
    died = [f for f in result.findings if f.rule == "RL701"]
    assert len(died) == 1 and died[0].units.count == KILLED and died[0].message.startswith(f"{KILLED} of 24 units")
    path = tmp_path / "compare.html"
    path.write_text(render("html", Run(results=[result], config=config)), encoding="utf-8")
    browser.get(path.as_uri())
    shown = browser.execute_script(
        """
        const finding = [...document.querySelectorAll('#model-1 tr.finding')].find(r => r.dataset.rule === 'RL701');
        const rows = [...document.querySelectorAll('#model-1 table.compare-table tbody tr')];
        const facts = [...document.querySelectorAll('#model-1 .compare-facts div')];
        return {
            finding: finding.querySelector('td.num').textContent.trim(),
            table: rows[1].querySelectorAll('td')[4].textContent.trim(),
            fact: facts.find(d => d.querySelector('dt').textContent === 'Died since OLD').querySelector('dd').textContent,
        };
        """
    )
    assert shown == {"finding": f"{KILLED} / 24", "table": str(KILLED), "fact": f"{KILLED} units"}


def test_the_facts_say_what_the_probes_evidence_lets_it_claim():
    from relulint.report.html.views import model_facts

    def evidence(inputs: str | None) -> tuple[str, str, str] | None:
        probe = ProbeResult(inputs, 304, 8) if inputs else None
        return next((fact for fact in model_facts({}, [], probe) if fact[0] == "Evidence"), None)

    synthetic, data = evidence("synthetic"), evidence("data")
    assert synthetic is not None and "a suspicion: warnings at most" in synthetic[1]
    assert data is not None and data[1].startswith("real data")
    assert "proven (RL601" in data[2] and "max_firing_rate" in data[2] and "--data" in synthetic[2]
    assert evidence(None) is None  # no probe, no evidence to describe
