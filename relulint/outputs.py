"""Where reports go, and the side effects around rendering (the renderers themselves are pure).

A report destination is refused before any analysis runs when writing it could harm:
- it is an input of the run: a model, a model's external data file, the ``--compare`` checkpoint,
  the ``--data`` file (or a file inside the ``--data`` folder) or the configuration file;
- it exists and is not a regular file (a device node, a named pipe, a socket);
- it is a symbolic link, whatever it points to: the report would replace the link (``os.replace``),
  and a link is how an attacker's checkout would aim a report at a file it must not reach. Give the
  target's own path instead (``-`` for stdout).

The integration side effects that used to hide in renderers live here too: the git top level that
SARIF paths are relative to, and the Markdown summary appended to ``$GITHUB_STEP_SUMMARY``.
"""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from relulint.errors import UsageError
from relulint.wire import Malformed, read_varint


@dataclass(frozen=True)
class RunInputs:
    """Every file the run reads, for the destination checks."""

    models: tuple[str, ...] = ()  # the linted models and the --compare checkpoint
    files: tuple[str, ...] = ()  # the --data file, the configuration file
    folders: tuple[str, ...] = ()  # a --data folder


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _stat(path: str | Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def check_destination(destination: str, inputs: RunInputs) -> Path:
    """The path to write ``destination``'s report to, or a UsageError saying why it is refused."""
    path = Path(destination)
    if not path.parent.is_dir():
        raise UsageError(f"{destination}: cannot write the report: folder '{path.parent}' does not exist")
    if path.is_symlink():
        raise UsageError(
            f"{destination}: is a symbolic link; relulint does not write reports through links "
            "(give the target's own path, or '-' for stdout)"
        )
    if path.is_dir():
        raise UsageError(f"{destination}: is a folder; give a file name for the report")
    for folder in inputs.folders:  # the next run would read a report there as data
        if path.resolve().is_relative_to(Path(folder).resolve()):
            raise UsageError(f"{destination}: is inside the --data folder '{folder}'; write the report elsewhere")
    existing = _stat(path)
    if existing is None:
        return path  # a new file cannot be an input
    if not stat.S_ISREG(existing.st_mode):
        raise UsageError(f"{destination}: is a device, named pipe or socket, not a file; refusing to write a report")
    for model in inputs.models:
        model_stat = _stat(model)
        if model_stat is not None and _same(model_stat, existing):
            raise UsageError(f"{destination}: refusing to overwrite an input model with a report")
        if model_stat is not None and may_name_as_external_data(Path(model), path, existing):
            raise UsageError(
                f"{destination}: refusing to overwrite a file that model '{model}' may read as external data"
            )
    for given in inputs.files:
        given_stat = _stat(given)
        if given_stat is not None and _same(given_stat, existing):
            raise UsageError(f"{destination}: refusing to overwrite an input of this run ('{given}') with a report")
    return path


def may_name_as_external_data(model: Path, destination: Path, existing: os.stat_result) -> bool:
    """Whether ``model`` may name ``destination`` as external data.

    The loader only reads external data from below the model's folder, so a file elsewhere is safe.
    Inside it, every ``location`` entry in the model's bytes is resolved and compared with the file
    (so hard and symbolic links count), without parsing the model: an external-data entry is a
    ``StringStringEntryProto`` whose key ``location`` is stored as plain bytes wherever the tensor
    sits (subgraphs, functions, sparse tensors, training graphs). An entry laid out in an unusual
    order falls back to looking for the file's name anywhere in the model; unreadable means refused.
    """
    folder = model.resolve().parent
    if not destination.resolve().is_relative_to(folder):
        return False
    try:
        # Read, not memory-mapped: a mapped model truncated meanwhile would kill the process (SIGBUS).
        data = model.read_bytes()
        locations, unsure = _locations(data)
        if unsure and data.find(os.fsencode(destination.name)) >= 0:
            return True
    except (OSError, ValueError):
        return True
    for location in locations:
        named = _stat(folder / os.fsdecode(location))
        if named is not None and _same(named, existing):
            return True
    return False


LOCATION_KEY = b"\x0a\x08location"  # field 1 (key), length 8, "location"
VALUE_TAG = 0x12  # field 2 (value), length-delimited


def _locations(data: bytes) -> tuple[set[bytes], bool]:
    """Every external-data location written key-first, and whether some entry was not."""
    locations: set[bytes] = set()
    unsure = False
    position = data.find(LOCATION_KEY)
    while position >= 0:
        start = position + len(LOCATION_KEY)
        try:
            if start >= len(data) or data[start] != VALUE_TAG:
                raise Malformed
            length, offset = read_varint(data, start + 1, len(data))
            if offset + length > len(data):
                raise Malformed
            locations.add(bytes(data[offset : offset + length]))
        except Malformed:
            unsure = True
        position = data.find(LOCATION_KEY, start)
    return locations, unsure


# ---- side effects for the renderers ------------------------------------------------------------
@cache
def git_top_level(folder: str) -> Path | None:
    """The git work tree holding ``folder``, or None outside git (or without git installed)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    top = done.stdout.strip()
    return Path(top) if done.returncode == 0 and top else None


def repository_root(sarif_root: str | None) -> Path:
    """``--sarif-root``, else the git top level of the current folder, else the current folder."""
    if sarif_root:
        return Path(sarif_root).resolve()
    cwd = os.getcwd()
    return (git_top_level(cwd) or Path(cwd)).resolve()


def append_step_summary(markdown: str) -> str | None:
    """Append to $GITHUB_STEP_SUMMARY when set; return a problem to report instead of failing."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    try:
        with open(target, "a", encoding="utf-8", errors="surrogateescape") as stream:
            stream.write(markdown)
    except OSError as exc:
        return f"cannot append the summary to $GITHUB_STEP_SUMMARY ({exc.strerror or exc})"
    return None
