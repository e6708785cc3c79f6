"""Escaping of names a model (or its file name) supplies, for every place a report can land.

Model files come from anyone's pull request, so their names, node names and texts are hostile input:
- a terminal gets control characters shown escaped (``\\x1b``), never raw;
- a GitHub Actions log runs *workflow commands*: a line that starts with ``::`` once leading
  whitespace is trimmed (``::error title=X::...``), and the legacy ``##[command]`` form anywhere in a
  line. No output line may start with ``::`` unless relulint wrote that command itself, and ``##[``
  never appears as such;
- a Markdown step summary renders images, links, autolinks, @mentions and raw HTML;
- a file name that is not UTF-8 reaches Python as lone surrogates (``surrogateescape``), which no
  UTF-8 writer accepts: JSON and SARIF write them as ``\\udcXX`` escapes, text as ``\\udcff``.
"""

from __future__ import annotations

import re

LEGACY_COMMAND = "##["
LEGACY_SHOWN = "##\\x5b"  # shown as an escape, like a control character


def clean(text: str) -> str:
    """Model-supplied text for a terminal or a log: unprintable characters (control characters, lone
    surrogates, line and paragraph separators) shown escaped, and no legacy workflow command."""
    if text.isprintable():
        shown = text
    else:
        shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return shown.replace(LEGACY_COMMAND, LEGACY_SHOWN)


def shown_path(path: str) -> str:
    """A file name to start a text line with: escaped as ``clean`` does, and never beginning with what a
    runner would take for a workflow command (``./`` names the same file)."""
    shown = clean(path)
    if shown[:1].isspace() or shown.startswith(":"):
        return "./" + shown
    return shown


_JSON_UNSAFE = re.compile("##\\[|[\ud800-\udfff]")


def _json_escape(match: re.Match[str]) -> str:
    found = match.group()
    return "##\\u005b" if found == LEGACY_COMMAND else f"\\u{ord(found):04x}"


def json_text(text: str) -> str:
    """Serialized JSON made safe for a log and a UTF-8 writer, with the same content: characters that
    only occur inside strings (``[`` after ``##``, lone surrogates) are written as ``\\uXXXX`` escapes."""
    return _JSON_UNSAFE.sub(_json_escape, text)


# Every ASCII punctuation character may be backslash-escaped in CommonMark; these mean something
# (``$`` opens math on GitHub, ``|`` ends a table cell).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$])")
# Autolinks and @mentions are found in rendered text, after escapes are undone: a word joiner
# (U+2060, invisible) breaks them up.
_AUTOLINK_TRIGGERS = re.compile(r"(@|://|www\.)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def markdown_text(text: str) -> str:
    """Text for a Markdown table cell shown exactly as it is: no HTML, image, link, autolink, mention,
    emphasis, code span, column or line break."""
    text = clean(text)
    text = _AUTOLINK_TRIGGERS.sub(lambda m: m.group()[0] + WORD_JOINER + m.group()[1:], text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
