"""Split files: which images of a root form a split (DATASET.TRAIN_SPLIT_FILE / TEST_SPLIT_FILE).

A split file is UTF-8 text with one image id per line (path relative to the image root, POSIX
separators, no extension: the makd.formats.image_ids rule).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from makd.atomic_files import atomic_write_text
from makd.errors import ConfigError
from makd.formats.text_lists import read_text_list


def read_split_file(path: str, key: str, known_ids: Sequence[str], root: str) -> list[int]:
    """Positions in `known_ids` of the ids listed in split file `path` (config key `key`), sorted.

    Read as every text list is (makd.formats.text_lists: a BOM and CRLF removed with a warning, blank lines ignored,
    a repeated id an error naming both lines); an unknown id is a one-line ConfigError.
    """
    listed = read_text_list(
        path, key, entry="id", error=ConfigError, missing_fix=" (make it with tools/make_split_files.py)"
    )
    wanted = listed.entries
    position_of = {image_id: p for p, image_id in enumerate(known_ids)}
    unknown = [i for i in wanted if i not in position_of]
    if unknown:
        raise ConfigError(
            f"{key} {path}: {len(unknown)} ids are not images under {root} (first: {', '.join(unknown[:3])}); "
            "ids are paths relative to that folder without extension"
        )
    if not wanted:
        raise ConfigError(f"{key} {path} lists no image ids")
    return sorted(position_of[i] for i in wanted)


def write_split_file(path: str | os.PathLike, ids: Sequence[str]) -> None:
    atomic_write_text(path, "".join(f"{i}\n" for i in ids))
