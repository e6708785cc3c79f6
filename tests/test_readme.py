"""README.md opens with the two commands a newcomer types; .ci/run runs the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def opening_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text)[:2]


def test_readme_opens_with_install_and_test_commands():
    install_and_run, install_and_test = opening_commands()
    assert install_and_run.startswith("python3 -m pip install . && relulint examples/")
    example = install_and_run.split("relulint ", 1)[1].split()[0]
    assert (ROOT / example).is_file()
    assert "'.[test]'" in install_and_test and install_and_test.endswith("python3 -m pytest")


def test_ci_runs_exactly_the_readme_test_command():
    _, install_and_test = opening_commands()
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert install_and_test in lines
