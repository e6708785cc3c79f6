"""``LoadedModel``: a parsed model and what loading learnt about its file, below everything that reads it.

The loader (``relulint.loader``) makes one; the external-data gate (``relulint.external``), the
inlining (``relulint.inlining``), the tensor reader (``relulint.tensors``) and the graph read it. It holds
no logic of loading, so each of them imports this module and none imports another back.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relulint.findings import Note
from relulint.lazy import onnx


class Digest:
    """The SHA-256 of the file's bytes, computed on another thread and waited for only when read.

    hashlib releases the GIL on large buffers, so the hash runs on the other core while the model
    is parsed, the graph built and the probe started (0.06 s of a 100 MB file off the critical path).
    """

    def __init__(self, data: bytes) -> None:
        self._digest = hashlib.sha256()
        self._thread = threading.Thread(target=self._digest.update, args=(data,), daemon=True)
        self._thread.start()
        self._value: str | None = None

    def value(self) -> str:
        if self._value is None:
            self._thread.join()
            self._value = self._digest.hexdigest()
        return self._value


@dataclass(frozen=True)
class CheckedFile:
    """An external-data file that passed the gate: inside the model's folder, a regular file, this one."""

    path: Path  # resolved
    device: int
    inode: int
    size: int


@dataclass
class LoadedModel:
    path: str  # as the user gave it; used in every message
    model: onnx.ModelProto
    digest: Digest | str  # the file's SHA-256, or its pending computation
    file_size: int
    base_dir: Path = Path(".")  # external data is read only from below this folder
    # Set when large inline weights were left in the file and point into it (relulint.wire): its name.
    inline_location: str | None = None
    unavailable: dict[tuple[str, str, str], str] = field(default_factory=dict)  # external_key -> why missing
    # location -> the file it names, for every location the external-data gate let through
    external_files: dict[str, CheckedFile] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        if not isinstance(self.digest, str):
            self.digest = self.digest.value()
        return self.digest

    def info(self) -> dict[str, Any]:
        model = self.model
        opsets = {(entry.domain or "ai.onnx"): entry.version for entry in model.opset_import}
        return {
            "opset": opsets.get("ai.onnx"),
            "opsets": opsets,
            "ir_version": model.ir_version,
            "producer": {"name": model.producer_name, "version": model.producer_version},
            "doc_string": _clip(model.doc_string, 2000),
            # Author-supplied key/value pairs; capped so a hostile model cannot flood the reports.
            "metadata": {_clip(p.key, 200): _clip(p.value, 2000) for p in list(model.metadata_props)[:50]},
            "file_size": self.file_size,
        }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
