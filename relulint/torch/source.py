"""Where a module is defined in the user's Python code: the ``self.conv2 = ...`` line of its parent.

Read from the source of the classes the user's module is made of (``inspect``), never by running
anything. Containers from torch itself (``Sequential``, ``ModuleList``) have no line of their own worth
showing: for ``layer3.1.conv2`` inside a ``Sequential`` the line is where the container is assigned.
"""

from __future__ import annotations

import ast
import inspect
import os
import textwrap
from pathlib import Path

import torch

TORCH_ROOT = Path(torch.__file__).resolve().parent


# Class -> what _class_assignments found (a dict, not functools.cache: its typing wants a Hashable
# argument, which torch's stubs keep a Module class from being).
_ASSIGNMENTS: dict[type, tuple[str, dict[str, int]] | None] = {}


def _class_assignments(cls: type) -> tuple[str, dict[str, int]] | None:
    """(source file, attribute -> line of its first ``self.attribute = ...``) of a class, or None."""
    if cls not in _ASSIGNMENTS:
        _ASSIGNMENTS[cls] = _find_assignments(cls)
    return _ASSIGNMENTS[cls]


def _find_assignments(cls: type) -> tuple[str, dict[str, int]] | None:
    try:
        file = inspect.getsourcefile(cls)
        lines, first = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return None
    if file is None or _is_torch_file(file):
        return None
    try:
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except SyntaxError:
        return None
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                line = node.lineno + first - 1
                found[target.attr] = min(found.get(target.attr, line), line)
    found.setdefault("", first)  # the class statement itself
    return file, found


def _is_torch_file(file: str) -> bool:
    try:
        return Path(file).resolve().is_relative_to(TORCH_ROOT)
    except OSError:
        return True


def definition_site(root: torch.nn.Module, qualified: str) -> tuple[str, int] | None:
    """The file and line that create the module at ``qualified`` (``""`` is the root), or None."""
    modules = dict(root.named_modules())
    path = qualified
    while True:
        parent_name, _, attribute = path.rpartition(".")
        if not path:
            known = _class_assignments(type(root))
            return (known[0], known[1][""]) if known else None
        parent = modules.get(parent_name)
        known = _class_assignments(type(parent)) if parent is not None else None
        if known is not None and attribute in known[1]:
            return known[0], known[1][attribute]
        path = parent_name  # a torch container, or set up in a way not written as self.x = ...


def shown_file(file: str) -> str:
    """A path relative to the current folder when the file is below it (as reports show paths)."""
    try:
        return Path(os.path.relpath(file)).as_posix() if Path(file).resolve().is_relative_to(Path.cwd()) else file
    except ValueError:
        return file
