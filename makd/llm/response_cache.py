"""Replies stored on disk by request hash, so a re-run (or a run resumed after a crash) pays nothing twice.

One JSON file per request, `<dir>/<sha256 of the request>.json`, written atomically. The request
that is hashed holds the server URL, model, messages and sampling settings, never the API key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from makd.atomic_files import OutputLocationError, atomic_write_json
from makd.formats.files import utc_now

log = logging.getLogger(__name__)


def request_hash(request: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of `request` (sorted keys, no spaces)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """A folder of cached replies; `get` returns None for unknown or unreadable entries."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputLocationError(f"--cache {self.folder} is a file; give a folder for cached replies")

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:
            log.warning("ignoring unreadable cache entry %s (%s); asking the server again", path, err)
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("reply"), str):
            log.warning("ignoring malformed cache entry %s; asking the server again", path)
            return None
        return entry

    def put(self, key: str, request: Mapping[str, Any], reply: str, **extra: Any) -> None:
        atomic_write_json(self.path(key), {"request": dict(request), "reply": reply, "date": utc_now(), **extra})
