"""Split files: which images of a root form a split (DATASET.TRAIN_SPLIT_FILE / TEST_SPLIT_FILE).

A split file is UTF-8 text with one image id per line (path relative to the image root, POSIX
separators, no extension: the makd.formats.image_ids rule).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from makd.atomic_files import atomic_write_text
from makd.errors import ConfigError
from makd.formats.read_log import note_read


def read_split_file(path: str, key: str, known_ids: Sequence[str], root: str) -> list[int]:
    """Positions in `known_ids` of the ids listed in split file `path` (config key `key`), sorted.

    Blank lines are ignored; an unknown or repeated id is a one-line ConfigError.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"{key} {path} does not exist (make it with tools/make_split_files.py)")
    try:
        data = Path(path).read_bytes()
        note_read(path, data)  # the run's input fingerprint (makd.formats.read_log)
        lines = [line.strip() for line in data.decode("utf-8").splitlines()]
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{key} {path}: not UTF-8 text ({err.reason} at byte {err.start}); is it a split file?"
        ) from None
    except OSError as err:
        raise ConfigError(f"{key} {path} cannot be read ({err.strerror or err})") from None
    wanted = [line for line in lines if line]
    position_of = {image_id: p for p, image_id in enumerate(known_ids)}
    unknown = [i for i in wanted if i not in position_of]
    if unknown:
        raise ConfigError(
            f"{key} {path}: {len(unknown)} ids are not images under {root} (first: {', '.join(unknown[:3])}); "
            "ids are paths relative to that folder without extension"
        )
    seen: set[str] = set()
    for i in wanted:
        if i in seen:
            raise ConfigError(f"{key} {path}: id {i!r} is listed twice")
        seen.add(i)
    if not wanted:
        raise ConfigError(f"{key} {path} lists no image ids")
    return sorted(position_of[i] for i in wanted)


def write_split_file(path: str | os.PathLike, ids: Sequence[str]) -> None:
    atomic_write_text(path, "".join(f"{i}\n" for i in ids))
