"""Every file makd writes goes through here: readers see the old file or the whole new one, never a part.

Write to a temp file in the same folder, fsync it, `os.replace` it over the target, fsync the
folder. Files get the user's umask (mkstemp alone would make them 0600).

The bytes are hashed on their way to the disk (no second read), and a folder can be observed: a run folder's
manifest (makd.engine.run_manifest) learns every file written into it from here, before the file replaces the old
one, so a kill between the two never leaves a file the manifest does not know.

When the machine refuses the write (disk full, file-size limit, read-only or forbidden folder, a file where a
folder belongs, a folder where the file belongs), the error is one `OutputWriteError` line naming the path and the
cause; the target still holds its previous content and the temp file is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from makd.errors import EnvironmentFailure, MakdError, describe_os_error, is_environment_error, os_error_cause


class OutputLocationError(MakdError):
    """An output path cannot be written (its parent is a file, a folder is read-only, ...)."""


class OutputWriteError(EnvironmentFailure):
    """The machine refused a write (disk full, file-size limit, ...); the target keeps its previous content."""


@dataclass(frozen=True)
class WrittenFile:
    """What a write put on the disk: bytes, their sha256 and the file's mtime (ns), for the manifest."""

    path: Path
    size: int
    sha256: str
    mtime_ns: int


# (folder, callback(path, written)) of every observed folder; see observe_writes.
WriteObserver = Callable[[Path, WrittenFile], None]
_observers: list[tuple[Path, WriteObserver]] = []


@contextlib.contextmanager
def observe_writes(folder: str | os.PathLike, callback: WriteObserver) -> Iterator[None]:
    """While the block runs, `callback(path, written)` hears of every atomic write into `folder` (its tree), just
    before the new file replaces the old one."""
    entry = (Path(folder).resolve(), callback)
    _observers.append(entry)
    try:
        yield
    finally:
        _observers.remove(entry)


def _observers_of(path: Path) -> list[WriteObserver]:
    if not _observers:
        return []
    resolved = path.resolve()
    return [callback for folder, callback in _observers if resolved.is_relative_to(folder)]


def file_sha256(path: str | os.PathLike, size: int | None = None) -> str:
    """sha256 of the file's bytes (of its first `size` bytes when given)."""
    digest = hashlib.sha256()
    left = size
    with open(path, "rb") as fh:
        while left is None or left > 0:
            block = fh.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


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


class _HashingFile:
    """The temp file as the writer sees it: bytes are counted and hashed on their way; an OSError is remembered,
    since some writers (torch.save) turn it into an exception of their own."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.size, self.digest, self.error = fh, 0, hashlib.sha256(), None

    def write(self, data) -> int:
        try:
            written = self.fh.write(data)
        except OSError as err:
            self.error = err
            raise
        view = memoryview(data).cast("B")[: written if written is not None else len(data)]
        self.digest.update(view)
        self.size += len(view)
        return written

    def __getattr__(self, name):
        return getattr(self.fh, name)


def _write_error(err: OSError, path: Path) -> OutputWriteError:
    kept = f"; {path.name} keeps its previous content" if path.is_file() else ""
    return OutputWriteError(describe_os_error(err, path) + kept)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # the parent itself is a file
        raise OutputWriteError(f"cannot write {path}: {path.parent} is a file, not a folder (ENOTDIR)") from None
    except OSError as err:
        if is_environment_error(err):
            raise _write_error(err, path) from None
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> WrittenFile:
    """Call `write(binary_file)` on a temp file next to `path`, then move it into place atomically.

    Returns what was written (size, sha256, mtime). A write the machine refuses raises OutputWriteError (one line);
    `path` then holds its previous content.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputWriteError(f"cannot write {path}: it is a folder, not a file (EISDIR); move it away or give "
                               "another path")  # fmt: skip
    _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if is_environment_error(err):
            raise _write_error(err, path) from None
        raise
    sink = None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            sink = _HashingFile(fh)
            write(sink)
            fh.flush()
            os.fsync(fh.fileno())
        stat = os.stat(tmp)
        written = WrittenFile(path, sink.size, sink.digest.hexdigest(), stat.st_mtime_ns)
        for callback in _observers_of(path):
            callback(path, written)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = err if isinstance(err, OSError) else getattr(sink, "error", None)
        if cause is not None and is_environment_error(cause):
            raise _write_error(cause, path) from None
        raise
    _fsync_dir(path.parent)
    return written


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> WrittenFile:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> WrittenFile:
    """UTF-8 text with "\\n" line ends."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> WrittenFile:
    """Strict JSON (NaN and infinities are refused: strict parsers reject them; write None instead)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n")


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> WrittenFile:
    """Copy `source` to `target` so a kill mid-copy never leaves a truncated `target`."""
    with open(source, "rb") as src:
        return atomic_write(target, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))


def missing_folders(folder: Path) -> list[Path]:
    """The folders of `folder`'s path that do not exist yet, outermost first."""
    missing = []
    for candidate in [folder, *folder.parents]:
        if candidate.exists() or candidate.is_symlink():
            break
        missing.append(candidate)
    return missing[::-1]


def check_output_location(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail now, before any costly work, when `path` could not be written later.

    Proves the folder writable with a temp file; folders it had to create for that are removed again, so a
    command refused later leaves no empty folder behind (the real write creates them). Returns `path` as a Path.
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
    created = missing_folders(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        where = next((str(p) for p in [parent, *parent.parents] if p.exists()), str(parent))
        raise OutputLocationError(f"{what} {path} cannot be written ({os_error_cause(err)}: {where})") from None
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path


__all__ = [
    "OutputLocationError",
    "OutputWriteError",
    "WrittenFile",
    "atomic_copy",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_location",
    "file_sha256",
    "missing_folders",
    "observe_writes",
]
