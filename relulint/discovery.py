"""Which models a run lints: files as given, folders searched like ruff searches them.

- Folders are searched recursively for ``*.onnx``, skipping excluded names: ``exclude`` (by default
  ruff's list of tool and environment folders, so ``relulint .`` beside a ``.venv`` does not lint
  installed packages) and ``extend-exclude``. A pattern without ``/`` is matched against every
  folder and file name; one with ``/`` against the path from the configuration file's folder (from
  the current folder for ``--exclude``), whichever folder is searched, as ruff does. Files given by
  name are always linted.
- Files git ignores (``.gitignore``, ``.git/info/exclude``, the global excludes file) are skipped
  when folders are searched (``--no-respect-gitignore`` keeps them), asked of ``git check-ignore``
  when git is installed and the folder is in a work tree: relulint does not reimplement gitignore.
  A folder given by name that git itself ignores is searched whole, as ruff and ripgrep do: naming
  it is the request (``relulint models/`` when ``models/`` is in ``.gitignore``).
- A file that is not a model but a model's external data (``model.onnx.data``) stands for the
  models beside or above it that name it, so a commit that changes only the weights is linted.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from relulint.findings import ModelResult
from relulint.outputs import may_name_as_external_data

# ruff's default excludes that can hold models nobody in this repository made.
DEFAULT_EXCLUDES = (
    ".bzr",
    ".direnv",
    ".eggs",
    ".git",
    ".hg",
    ".mypy_cache",
    ".nox",
    ".pants.d",
    ".pytype",
    ".ruff_cache",
    ".svn",
    ".tox",
    ".venv",
    "__pypackages__",
    "_build",
    "buck-out",
    "build",
    "dist",
    "node_modules",
    "site-packages",
    "venv",
)
MODEL_SUFFIX = ".onnx"
DATA_SEARCH_LEVELS = 8  # folders above a data file searched for the model that names it


@dataclass(frozen=True)
class Search:
    excludes: tuple[str, ...] = DEFAULT_EXCLUDES
    respect_gitignore: bool = True
    from_data: bool = False  # a file that no model names as its data is skipped, not an error


def excluded(relative: PurePosixPath, patterns: Iterable[str], folder: Path = Path(".")) -> bool:
    """Whether the path ``relative`` below the searched ``folder`` matches a pattern: a name anywhere on it,
    or, for a pattern with ``/`` (made absolute by ``config.anchored_patterns``), the whole absolute path."""
    absolute = None
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if "/" in pattern:
            if absolute is None:
                absolute = Path(os.path.abspath(folder / relative)).as_posix()
            target = absolute if pattern.startswith("/") or os.path.isabs(pattern) else relative.as_posix()
            if fnmatch.fnmatchcase(target, Path(pattern).as_posix().removeprefix("./")):
                return True
        elif any(fnmatch.fnmatchcase(part, pattern) for part in relative.parts):
            return True
    return False


def search_folder(folder: Path, search: Search) -> tuple[list[str], int]:
    """The models below ``folder``, and how many paths (folders, ``.onnx`` files) excludes and gitignore skipped."""
    found: list[str] = []
    skipped = 0
    for root, dirs, files in os.walk(folder):
        here = PurePosixPath(Path(root).relative_to(folder).as_posix())
        dirs_before = list(dirs)
        dirs[:] = sorted(d for d in dirs if not excluded(here / d, search.excludes, folder))
        skipped += sum(1 for d in dirs_before if d not in dirs)
        for name in files:
            if not name.endswith(MODEL_SUFFIX):
                continue
            if excluded(here / name, search.excludes, folder):
                skipped += 1
                continue
            path = Path(root) / name
            if path.is_file():
                found.append(str(path))
    found.sort()
    if search.respect_gitignore and git_unignored([str(folder)]):  # a named, ignored folder is searched whole
        kept = git_unignored(found)
        skipped += len(found) - len(kept)
        found = kept
    return found, skipped


def git_unignored(paths: list[str]) -> list[str]:
    """``paths`` without those git ignores; all of them when git is missing or they are outside a work tree."""
    if not paths:
        return paths
    try:
        done = subprocess.run(
            ["git", "check-ignore", "--stdin", "-z"],
            input=b"".join(os.fsencode(path) + b"\0" for path in paths),
            capture_output=True,
            timeout=60,
            cwd=os.path.dirname(os.path.abspath(paths[0])),
        )
    except (OSError, subprocess.SubprocessError):
        return paths
    if done.returncode not in (0, 1):  # 128: not a git work tree (or git failed): nothing is ignored
        return paths
    ignored = {os.fsdecode(item) for item in done.stdout.split(b"\0") if item}
    return [path for path in paths if path not in ignored]


def models_naming(data_file: Path, stop: Path) -> list[str]:
    """The models in ``data_file``'s folder and the folders above it (up to ``stop``) that name it as data."""
    try:
        target = os.stat(data_file)
    except OSError:
        return []
    folder = data_file.resolve().parent
    found = []
    for _ in range(DATA_SEARCH_LEVELS):
        for candidate in sorted(folder.glob(f"*{MODEL_SUFFIX}")):
            if candidate.is_file() and may_name_as_external_data(candidate, data_file, target):
                found.append(candidate)
        if folder == stop or folder.parent == folder:
            break
        folder = folder.parent
    return [_as_given(path, data_file) for path in found]


def _as_given(model: Path, data_file: Path) -> str:
    """The model's path in the form the data file was given (relative stays relative)."""
    if data_file.is_absolute():
        return str(model)
    try:
        return os.path.relpath(model)
    except ValueError:
        return str(model)


# torch.export.load unpickles parts of a .pt2 (and retries with weights_only=False), which can run code.
PT2_REFUSED = (
    "a torch.export program (.pt2) is loaded with pickle, which can run code from the file, and relulint "
    "never runs code from what it lints; export it to ONNX, or lint the module with relulint.torch.check"
)


def expand_paths(paths: Iterable[str], search: Search) -> tuple[list[str], list[ModelResult]]:
    """Models to lint, each once, in the order given; unusable paths become errors."""
    models: list[str] = []
    errors: list[ModelResult] = []
    stop = Path.cwd().resolve()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found, skipped = search_folder(path, search)
            if not found:
                why = "folder holds no .onnx files"
                if skipped:
                    why += f" that are not excluded or git-ignored ({skipped} excluded or ignored paths skipped)"
                errors.append(ModelResult(path=given, error=why))
            models.extend(found)
        elif path.suffix.lower() == ".pt2":
            errors.append(ModelResult(path=given, error=PT2_REFUSED))
        elif not given.endswith(MODEL_SUFFIX) and path.is_file() and (owners := models_naming(path, stop)):
            models.extend(owners)
        elif search.from_data and not given.endswith(MODEL_SUFFIX):
            continue  # a data file of no model here (e.g. pre-commit passing every *.bin)
        else:
            models.append(given)
    unique = list(dict.fromkeys(models))
    return unique, errors
