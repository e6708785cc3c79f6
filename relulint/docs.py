"""Rule pages: the Markdown in rules/ and ``relulint --explain``, written from each rule's META."""

from __future__ import annotations

from pathlib import Path

from relulint.rules import RuleMeta, all_rules


def rule_page(meta: RuleMeta) -> str:
    lines = [
        f"# {meta.id} {meta.name}",
        "",
        f"Family: {meta.family} · Default severity: {meta.severity}"
        + (f" · Needs: {', '.join(meta.needs)}" if meta.needs else ""),
        "",
        "## What it does",
        "",
        meta.summary,
        "",
        "## Why is this bad?",
        "",
        meta.why.strip(),
        "",
    ]
    if meta.example:
        lines += ["## Example", "", meta.example.strip(), ""]
    lines += ["## How to fix", "", meta.fix.strip(), ""]
    if meta.options:
        lines += ["## Options", "", "| option | default | meaning |", "| --- | --- | --- |"]
        for option in meta.options:
            lines.append(f"| `{option.name}` | `{option.default}` | {option.description} |")
        lines += [
            "",
            "Set them in `pyproject.toml` (or `relulint.toml` without the `tool.relulint.` prefix):",
            "",
            "```toml",
            f"[tool.relulint.rules.{meta.id}]",
            *(f"{option.name} = {_toml(option.default)}" for option in meta.options),
            "```",
            "",
        ]
    return "\n".join(lines)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def catalogue_index() -> str:
    lines = ["# relulint rules", "", "| id | name | severity | what it detects |", "| --- | --- | --- | --- |"]
    for rule in all_rules():
        meta = rule.meta
        summary = meta.summary.replace("|", "\\|")  # a "|" in a summary would split the table cell
        lines.append(f"| [{meta.id}]({meta.id}.md) | {meta.name} | {meta.severity} | {summary} |")
    return "\n".join(lines) + "\n"


def expected_pages() -> dict[str, str]:
    """File name -> content of every page in the top-level rules/ folder."""
    pages = {f"{rule.id}.md": rule_page(rule.meta) for rule in all_rules()}
    pages["README.md"] = catalogue_index()
    return pages


def write_catalogue(folder: Path) -> list[str]:
    """Regenerate rules/: write every page, remove pages of rules that no longer exist."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = expected_pages()
    for stale in folder.glob("*.md"):
        if stale.name not in pages:
            stale.unlink()
    for name, text in pages.items():
        (folder / name).write_text(text, encoding="utf-8")
    return sorted(pages)


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "rules"
    for name in write_catalogue(target):
        print(target / name)
