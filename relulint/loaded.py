"""``LoadedModel``: a parsed model and what loading learnt about its file, below everything that reads it.

The loader (``relulint.loader``) makes one; the external-data gate (``relulint.external``), the
inlining (``relulint.inlining``), the tensor reader (``relulint.tensors``) and the graph read it. It holds
no logic of loading, so each of them imports this module and none imports another back.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relulint.findings import Note
from relulint.lazy import onnx

HASH_BLOCK_BYTES = 4 * 1024**2


class Digest:
    """The SHA-256 of the file's bytes: on another thread from the start when ``eager``, else computed when
    first read (the text and GitHub reports never show it; hashing a 100 MB model costs 0.1 s of wall time
    on two loaded cores even on a thread).

    hashlib releases the GIL on large buffers, so the hash runs on the other core while the model
    is parsed, the graph built and the probe started.
    """

    def __init__(self, hash_into: Callable[[Any], None], eager: bool, closing: int | None = None) -> None:
        self._digest = hashlib.sha256()
        self._hash_into = hash_into
        self._thread: threading.Thread | None = None
        self._value: str | None = None
        # An unread digest of a file holds a copy of its descriptor until the digest is dropped.
        self._release = weakref.finalize(self, os.close, closing) if closing is not None else None
        if eager:
            self.start()

    @classmethod
    def of_bytes(cls, data: bytes, eager: bool = True) -> Digest:
        return cls(lambda digest: digest.update(data), eager)

    @classmethod
    def of_file(cls, fd: int, size: int, eager: bool = True) -> Digest:
        """The digest of the file's first ``size`` bytes, read in blocks of one reused buffer (so a model
        that is not read whole is not read whole for its hash either), through its own copy of ``fd``: the
        caller may close its own."""
        own = os.dup(fd)
        return cls(lambda digest: _hash_file(digest, own, size), eager, closing=own)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._compute, daemon=True)
            self._thread.start()

    def _compute(self) -> None:
        try:
            self._hash_into(self._digest)
        finally:
            if self._release is not None:
                self._release()

    def settle(self) -> None:
        """For a load that failed: no thread outlives it, no descriptor is kept, nothing more is hashed."""
        if self._thread is not None:
            self._thread.join()
        elif self._release is not None:
            self._release()

    def value(self) -> str:
        if self._value is None:
            if self._thread is None:  # never started: computed here, now
                self._compute()
            else:
                self._thread.join()
            self._value = self._digest.hexdigest()
        return self._value


def _hash_file(digest: Any, fd: int, size: int) -> None:
    buffer = bytearray(HASH_BLOCK_BYTES)
    view = memoryview(buffer)
    done = 0
    try:
        while done < size:
            got = os.preadv(fd, [view[: min(len(buffer), size - done)]], done)
            if not got:  # the file shrank: the digest is of what it held
                break
            digest.update(view[:got])
            done += got
    except OSError:
        pass  # a read error is the model's reader's to report


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
    # id(tensor) -> (the tensor, why its values cannot be read): asked about seven times per layer (graph
    # constants, shapes, weight blocks, reads), each answer a dozen attribute reads (35,000 on 5,000 layers).
    # The tensor is held so that its id stays its own.
    tensor_problems: dict[int, tuple[Any, str | None]] = field(default_factory=dict)

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
