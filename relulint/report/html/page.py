"""The page: jinja2 environment, the inline assets and their CSP hashes, and ``render``."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from relulint import INFORMATION_URI, __version__
from relulint.findings import Severity
from relulint.report import Run
from relulint.report.html.comparison import source_name
from relulint.report.html.format import fmt_number, fmt_percent, fmt_time, show, show_code
from relulint.report.html.views import model_view
from relulint.report.text import summary

SEVERITY_ORDER = [Severity.ERROR, Severity.WARNING, Severity.NOTE]


@cache
def _asset(name: str) -> str:
    return resources.files("relulint.report").joinpath("templates", name).read_text(encoding="utf-8")


def csp_hash(inline: str) -> str:
    """The CSP source that allows exactly this inline script or style element, nothing else."""
    return "sha256-" + base64.b64encode(hashlib.sha256(inline.encode("utf-8")).digest()).decode("ascii")


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("relulint.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(show=show, code=show_code, number=fmt_number, percent=fmt_percent, r=_round, when=fmt_time)
    env.filters["source"] = source_name
    return env


def _round(value: float) -> str:
    """SVG coordinates: short and stable."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def totals(run: Run) -> dict[str, int]:
    counts = {str(s): 0 for s in SEVERITY_ORDER}
    for result in run.results:
        for key, value in result.counts().items():
            counts[key] += value
    return counts


def render(run: Run) -> str:
    script, css = _asset("report.js"), _asset("report.css")
    if re.search(r"</script", script, re.IGNORECASE) or re.search(r"</style", css, re.IGNORECASE):
        raise ValueError("report.js and report.css must not close their own element early")
    models = [model_view(i, result, run.config) for i, result in enumerate(run.results)]
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            models=models,
            totals=totals(run),
            summary=summary(run),
            failed=sum(1 for m in models if m.error is not None),
            version=__version__,
            information_uri=INFORMATION_URI,
            generated=run.finished or run.started,
            css=Markup(css),
            script=Markup(script),
            script_source=csp_hash(script),
            style_source=csp_hash(css),
        )
    )
