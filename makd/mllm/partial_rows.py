"""`<output>.partial.jsonl`: finished rows of a running extraction, appended and flushed as they finish.

Line 1 is a header with the settings that determine the numbers; a resumed run must match them. Then one
JSON object per line: `{"id": ..., "p": [p_1..p_Q]}` for a finished image or `{"id": ..., "error": ...}` for
an image that could not be scored (retried on resume), and `{"cost": {...}}` after each step: what that step
spent (makd.mllm.cost), so that a resumed run's sidecar can count the earlier runs' cost too. A process killed
mid-write leaves at most one truncated last line; reading drops it and truncates the file back to the last
complete line.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from makd.errors import EnvironmentFailure, describe_os_error, is_environment_error
from makd.file_lock import exclusive_lock
from makd.formats.errors import ArtifactError
from makd.mllm.cost import add_costs

FORMAT = "makd-partial-rows-1"


def partial_path(output: str | os.PathLike) -> Path:
    return Path(str(output) + ".partial.jsonl")


def output_lock(output: str | os.PathLike) -> contextlib.AbstractContextManager:
    """One writer per stage-2 output: the exclusive lock `<output>.lock`, held from the first look at the output and
    its partial file to the end (makd.file_lock; a second run on the same output stops at once naming the first)."""
    return exclusive_lock(Path(str(output) + ".lock"), f"stage-2 output {output}")


@dataclass
class PartialState:
    """What a partial file holds: its header settings, finished rows and per-image errors."""

    settings: dict | None  # None: no complete header (killed at once), nothing to keep
    rows: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    cost: dict[str, Any] | None = None  # the summed cost records of the earlier runs (None: none recorded)
    complete_bytes: int = 0  # length up to the last complete line


def read_partial(path: str | os.PathLike) -> PartialState:
    """Parse a partial file; a truncated last line (killed writer) is ignored, any other bad line is an error."""
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    # Everything after the last newline is an unfinished line (empty when the file ends with a newline).
    complete, complete_bytes = lines[:-1], len(data) - len(lines[-1])
    if not complete:
        return PartialState(settings=None)
    try:
        header = json.loads(complete[0])
        if header.get("format") != FORMAT:
            raise ValueError
    except (ValueError, AttributeError):
        raise ArtifactError(f"{path}:1: not a makd partial-rows header; delete the file or use --overwrite") from None
    state = PartialState(settings=header.get("settings", {}), complete_bytes=complete_bytes)
    for number, raw in enumerate(complete[1:], start=2):
        try:
            record = json.loads(raw)
            if isinstance(record, dict) and set(record) == {"cost"} and isinstance(record["cost"], dict):
                state.cost = add_costs([state.cost, record["cost"]])
                continue
            image_id = record["id"]
        except (ValueError, KeyError, TypeError):
            raise ArtifactError(f"{path}:{number}: malformed row {raw[:80]!r}; the file is damaged") from None
        if "p" in record:
            if image_id in state.rows:
                raise ArtifactError(f"{path}:{number}: image {image_id!r} appears twice; the file is damaged")
            state.rows[image_id] = record["p"]
            state.errors.pop(image_id, None)
        else:
            state.errors[image_id] = str(record.get("error", "unknown error"))
    return state


def settings_mismatch(saved: Any, current: Any, where: str = "") -> str | None:
    """The first setting that differs between a partial file and this run, as "a.b.c: saved != current".

    Nested settings are compared key by key, so the message names the leaf that changed (for example
    "teacher.tiling.max_tiles: 12 != 2"), not two long, identical-looking prefixes of the parent.
    """
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current), key=str):
            found = settings_mismatch(saved.get(key), current.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    if saved == current:
        return None

    def shown(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)[:120]

    return f"{where or 'settings'}: {shown(saved)} (partial file) != {shown(current)} (this run)"


class PartialWriter:
    """Appends rows to a partial file; `flush` pushes them to the OS so a killed process loses none.

    The file is append-only (not written through atomic_files): a kill leaves at most a cut last line,
    which `read_partial` drops. `open` creates it with the user's umask, like every other output.
    """

    def __init__(self, path: str | os.PathLike, settings: dict, state: PartialState | None = None) -> None:
        self.path = Path(path)
        self.failed = False
        with self._refused_writes():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if state is None or state.settings is None:
                self._fh = open(self.path, "w", encoding="utf-8", newline="\n")
                self._fh.write(json.dumps({"format": FORMAT, "settings": settings}, ensure_ascii=False) + "\n")
                self._fh.flush()
            else:
                os.truncate(self.path, state.complete_bytes)  # drop a half-written last line
                self._fh = open(self.path, "a", encoding="utf-8", newline="\n")

    def add_row(self, image_id: str, values: Sequence[float]) -> None:
        self._write({"id": image_id, "p": [float(v) for v in values]})

    def add_error(self, image_id: str, reason: str) -> None:
        self._write({"id": image_id, "error": reason})

    def add_cost(self, increment: dict[str, Any]) -> None:
        """What the rows written since the last cost record cost (a CostMeter increment)."""
        self._write({"cost": increment})

    def _write(self, record: dict[str, Any]) -> None:
        with self._refused_writes():
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        with self._refused_writes():
            self._fh.flush()

    def close(self) -> None:
        if self._fh.closed:
            return
        if self.failed:  # the rows on disk end at the last complete line, which read_partial keeps
            with contextlib.suppress(OSError):
                self._fh.close()
            return
        with self._refused_writes():
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    @contextlib.contextmanager
    def _refused_writes(self):
        """Disk full, a file-size limit, ...: one line naming the partial file; the rows already on disk stay (the
        command's hint says how to resume)."""
        try:
            yield
        except OSError as err:
            if not is_environment_error(err):
                raise
            self.failed = True
            raise EnvironmentFailure(describe_os_error(err, self.path)) from None
