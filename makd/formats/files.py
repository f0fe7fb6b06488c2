"""A stage file's text read once (with the sha256 of its bytes) and its sidecar `<file>.meta.json`.

Every stage file may have a sidecar describing how it was made (model, questions and their sha256, date, ...);
readers name the file and the fix in one ArtifactError line when it is missing, unreadable or not UTF-8.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from makd.formats.errors import ArtifactError
from makd.formats.read_log import note_read
from makd.formats.strict_json import loads_json

BYTE_ORDER_MARK = "\ufeff"
log = logging.getLogger("makd.formats.files")


def sidecar_path(path: str | os.PathLike) -> Path:
    """`<file>.meta.json` next to `path` (full file name kept, so x.txt and x.json never collide)."""
    return Path(str(path) + ".meta.json")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The sidecar of `path` as a dict (read strictly: a repeated key is an error), or None when there is none."""
    meta = sidecar_path(path)
    if not meta.exists():
        return None
    return read_json(meta, "sidecar")


def read_json(path: str | os.PathLike, what: str, missing_fix: str = "") -> Any:
    """The JSON value of file `path` (named `what` in messages), read strictly (makd.formats.strict_json): missing,
    unreadable, not UTF-8 or malformed is one ArtifactError line, a repeated key a DuplicateKeyError line."""
    text, _ = read_text_sha256(path, what, missing_fix=missing_fix)
    if text.startswith(BYTE_ORDER_MARK):  # RFC 8259 lets a reader ignore it; some Windows tools write one
        log.warning("%s: removed the UTF-8 byte-order mark at the start of the file", path)
        text = text[len(BYTE_ORDER_MARK) :]
    try:
        return loads_json(text, str(path))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None


def read_text_sha256(
    path: str | os.PathLike,
    what: str,
    encoding: str = "utf-8",
    missing_fix: str = "",
    not_utf8_hint: str = "",
    universal_newlines: bool = True,
) -> tuple[str, str]:
    """(text, sha256 of the bytes) of `path`, read once; missing, unreadable or not UTF-8 is one ArtifactError line.

    Line ends are read as Path.read_text reads them (universal newlines: "\\r\\n" and "\\r" become "\\n") unless
    `universal_newlines` is False (the text-list reader warns about them: makd.formats.text_lists).
    """
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{what} {path} is a folder, not a file; give the file's path")
    if not path.is_file():
        raise ArtifactError(f"{what} {path} does not exist{missing_fix}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"{what} {path} cannot be read ({err.strerror or err})") from None
    digest = note_read(path, data)  # the run's input fingerprint (makd.formats.read_log), from these very bytes
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}){not_utf8_hint}") from None
    if universal_newlines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, digest


def read_utf8_text(path: str | os.PathLike, what: str, encoding: str = "utf-8") -> str:
    """The text of `path`; a missing file or bytes that are not UTF-8 are one ArtifactError line naming `what`."""
    return read_text_sha256(path, what, encoding)[0]
