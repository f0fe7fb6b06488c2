"""Every file makd writes goes through here: readers see the old file or the whole new one, never a part.

Write to a temp file in the same folder, fsync it, `os.replace` it over the target, fsync the
folder. Files get the user's umask (mkstemp alone would make them 0600).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from makd.errors import MakdError


class OutputLocationError(MakdError):
    """An output path cannot be written (its parent is a file, a folder is read-only, ...)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms / file systems cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(binary_file)` on a temp file next to `path`, then move it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text with "\\n" line ends."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Strict JSON (NaN and infinities are refused: strict parsers reject them; write None instead)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n")


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy `source` to `target` so a kill mid-copy never leaves a truncated `target`."""
    with open(source, "rb") as src:
        atomic_write(target, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))


def check_output_location(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail now, before any costly work, when `path` could not be written later.

    Creates missing parent folders (as the later write would) and proves the folder is writable
    with a temp file. Returns `path` as a Path.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputLocationError(f"{what} {path} is a folder; give a file path")
    parent = path.parent
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputLocationError(f"{what} {path} cannot be written: {ancestor} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise OutputLocationError(f"{what} {path} cannot be written ({err.strerror}: {parent})") from None
    return path
