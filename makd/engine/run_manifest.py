"""manifest.json: what was written into a run folder, by whom, with which bytes; what may be replaced or removed.

Every file the trainer writes into its run folder goes through makd.atomic_files, which tells the manifest of the
run (observe_writes) just before the new file replaces the old one: name, size, sha256 of the bytes written (hashed
on their way to the disk, no second read), mtime and writer. An entry keeps the content it replaced as well, so a
kill between the manifest's write and the file's replace leaves a file the manifest still vouches for.

A file is the run's ("vouched for") when the manifest has its name and the file holds content the manifest knows
under that name, or content of another entry (latest.pth restored as a copy of epoch_2.pth, as the resume hint
says). Size and mtime equal to what was recorded prove it without reading; otherwise the bytes are hashed. A
user's file under another name is never the run's, even when its bytes are a copy of one. Files a library writes
itself (TensorBoard's event files, wandb's folder) are declared before the library creates them: a name pattern
holding a random token, or a whole folder.

tools/plot.py and tools/report.py record what they write into a run folder here too
(makd.engine.run_folder.recording_into_run_folder), holding the run's lock, so a later `--overwrite` can tell their
files from the user's.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from makd.atomic_files import WrittenFile, atomic_write_json, file_sha256, observe_writes
from makd.errors import MakdError

MANIFEST = "manifest.json"
FORMAT = "makd-run-manifest-1"
TRAINER = "tools/our_train.py"  # the writer name of the trainer's files


class ManifestError(MakdError):
    """manifest.json is unreadable or not a makd manifest."""


@dataclass(frozen=True)
class Version:
    """One content of a file: its size, sha256 and mtime (ns) when written."""

    size: int
    sha256: str
    mtime_ns: int


@dataclass
class Entry:
    """A name in the run folder the manifest vouches for: a file (its current content first, then the one it
    replaced), a name pattern (library files made under a token only this run knows) or a whole folder."""

    writer: str
    kind: str = "file"  # "file", "pattern" or "folder"
    versions: list[Version] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"writer": self.writer, "kind": self.kind, "versions": [asdict(v) for v in self.versions]}

    @classmethod
    def from_json(cls, data: dict) -> Entry:
        return cls(str(data["writer"]), str(data.get("kind", "file")), [Version(**v) for v in data.get("versions", [])])


class RunManifest:
    """The manifest of one run folder; `record` (through `recording`) keeps it current, `vouches` reads it."""

    def __init__(self, run_dir: Path, entries: dict[str, Entry] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.entries: dict[str, Entry] = dict(entries or {})

    @property
    def path(self) -> Path:
        return self.run_dir / MANIFEST

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> RunManifest | None:
        """The run folder's manifest, None when it has none; a damaged one is a one-line ManifestError."""
        path = Path(run_dir) / MANIFEST
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            entries = {str(name): Entry.from_json(value) for name, value in data["entries"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ManifestError(
                f"{path} cannot be read as a makd run manifest ({type(err).__name__}: {str(err)[:80]}); without it "
                "the run's files cannot be told from others: restore it, or move the folder away and start anew"
            ) from None
        return cls(Path(run_dir), entries)

    def save(self) -> None:
        # The manifest's own write is observed like any other; `_observed` skips it.
        atomic_write_json(self.path, {"format": FORMAT, "entries": {k: v.to_json() for k, v in self.entries.items()}})

    # ------------------------------------------------------------------ recording
    def name_of(self, path: Path) -> str | None:
        """`path` relative to the run folder (POSIX), None when it lies outside."""
        try:
            return Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(self.run_dir))).as_posix()
        except ValueError:
            try:
                return path.resolve().relative_to(self.run_dir.resolve()).as_posix()
            except ValueError:
                return None

    def record(self, name: str, written: WrittenFile, writer: str) -> None:
        """`name` now holds `written` (the content it held before is still accepted: see the module docstring)."""
        version = Version(written.size, written.sha256, written.mtime_ns)
        old = self.entries.get(name)
        kept = [v for v in old.versions[:1] if v.sha256 != version.sha256] if old and old.kind == "file" else []
        self.entries[name] = Entry(writer, "file", [version, *kept])
        self.save()

    def declare(self, name: str, writer: str, kind: str) -> None:
        """A pattern ("tensorboard/events.out.tfevents.*.<token>") or folder ("wandb") a library will fill."""
        if kind not in ("pattern", "folder"):
            raise ValueError(kind)
        self.entries[name] = Entry(writer, kind)
        self.save()

    def forget(self, names: list[str]) -> None:
        for name in names:
            self.entries.pop(name, None)
        self.save()

    def _observed(self, writer: str):
        def callback(path: Path, written: WrittenFile) -> None:
            name = self.name_of(path)
            if name is not None and name != MANIFEST:
                self.record(name, written, writer)

        return callback

    @contextlib.contextmanager
    def recording(self, writer: str) -> Iterator[RunManifest]:
        """While the block runs, every atomic write into the run folder is recorded as written by `writer`."""
        with observe_writes(self.run_dir, self._observed(writer)):
            yield self

    # ------------------------------------------------------------------ vouching
    def _known_content(self) -> dict[tuple[int, str], str]:
        return {(v.size, v.sha256): name for name, e in self.entries.items() for v in e.versions}

    def vouches(self, name: str) -> bool:
        """Whether the file `name` (relative to the run folder) is one this run (or a recording tool) wrote and
        holds content written here. Folders: when every file inside is vouched for."""
        path = self.run_dir / name
        if path.is_symlink():
            return False
        if path.is_dir():
            if self._covering(name) is not None:
                return True
            return all(self.vouches(f"{name}/{child.name}") for child in path.iterdir())
        entry = self.entries.get(name)
        if entry is None or entry.kind != "file":
            return self._covering(name) is not None
        stat = path.stat()
        if any(v.size == stat.st_size and v.mtime_ns == stat.st_mtime_ns for v in entry.versions):
            return True
        known = self._known_content()
        if not any(size == stat.st_size for size, _ in known):
            return False
        return (stat.st_size, file_sha256(path)) in known

    def _covering(self, name: str) -> Entry | None:
        """The pattern or folder entry that vouches for `name`, if any."""
        for key, entry in self.entries.items():
            if entry.kind == "folder" and (name == key or name.startswith(key + "/")):
                return entry
            if entry.kind == "pattern" and fnmatch.fnmatchcase(name, key):
                return entry
        return None
