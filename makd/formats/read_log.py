"""The input files a command read, each with the sha256 of the very bytes it parsed.

A reader that reads a file's bytes (makd.formats.files.read_text_sha256 for every stage file, the torch files of
teachers and pretrained students) calls `note_read`; inside `recording_reads()` the notes are kept. The trainer
records them as the run's input fingerprints (makd.engine.run_inputs): no file is read a second time to hash it,
and the hash is of what was parsed, not of what the file holds a moment later.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ReadFile:
    """One input as read: its absolute path, size and sha256."""

    path: str
    size: int
    sha256: str


_logs: list[dict[str, ReadFile]] = []


def note_read(path: str | os.PathLike, data: bytes) -> str:
    """Note that `data` (all of the file's bytes) was read from `path`; returns their sha256."""
    digest = hashlib.sha256(data).hexdigest()
    if _logs:
        read = ReadFile(os.path.abspath(os.fspath(path)), len(data), digest)
        for log in _logs:
            log[read.path] = read
    return digest


@contextlib.contextmanager
def recording_reads() -> Iterator[dict[str, ReadFile]]:
    """While the block runs, every noted read lands in the yielded dict (absolute path -> ReadFile; a file read
    twice keeps its last read)."""
    log: dict[str, ReadFile] = {}
    _logs.append(log)
    try:
        yield log
    finally:
        _logs.remove(log)
