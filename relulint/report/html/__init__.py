"""``--format html``: one self-contained page (inline CSS, JS and SVG) that makes no network request.

The page is rendered with jinja2 and autoescaping; everything a model supplies (paths, node
and tensor names, producer, messages built from them) reaches the page only through the
``show`` filter, which also makes control characters visible. A Content-Security-Policy
allows only this page's own script (by hash) and no request to anywhere, so even a
mistake in escaping could neither run a script nor load anything.

The parts: ``format`` (text and numbers), ``charts`` (geometry), ``comparison`` (the --compare
section), ``views`` (one model's view from its JSON) and ``page`` (templates, assets, ``render``).
"""

from relulint.report.html.page import render

__all__ = ["render"]
