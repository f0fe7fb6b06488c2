"""Which images go to which split: the stratified carve, CUB-200-2011's official split, a class-folder tree's ids.

The split files these are written to and read from are makd.formats.split_files.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from makd.errors import ConfigError
from makd.formats.errors import DatasetFormatError, DatasetMissingError
from makd.formats.image_ids import image_id, list_image_files
from makd.formats.text_lists import read_text_list


def stratified_split(
    ids: Sequence[str], labels: Sequence[int], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(kept, held_out) positions: round(fraction * n_c) images of each class c are held out.

    Within a class, images are ranked by sha256("<seed>/<id>"), so the carve depends only on the
    ids and the seed (not on numpy's RNG or on the other classes): identical across runs and
    machines, and adding images to one class never moves images of another. At least one image
    of every class stays in the kept part.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"split fraction must be in [0, 1), got {fraction}")
    by_class: dict[int, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        by_class[label].append(position)
    held_out: list[int] = []
    for positions in by_class.values():
        count = min(int(round(fraction * len(positions))), len(positions) - 1)
        ranked = sorted(positions, key=lambda p: hashlib.sha256(f"{seed}/{ids[p]}".encode()).hexdigest())
        held_out.extend(ranked[:count])
    held = set(held_out)
    return [p for p in range(len(ids)) if p not in held], sorted(held)


def cub_split_ids(cub_root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(train, test) ids of CUB-200-2011's official split, relative to `<cub_root>/images`.

    Reads `images.txt` ("<n> <class>/<file>.jpg") and `train_test_split.txt` ("<n> <1 train | 0 test>").
    """
    cub_root = Path(cub_root)
    paths: dict[str, str] = {}
    for number, line in _rows(cub_root / "images.txt"):
        paths[number] = line
    train: list[str] = []
    test: list[str] = []
    for number, flag in _rows(cub_root / "train_test_split.txt"):
        if number not in paths:
            raise DatasetFormatError(f"{cub_root / 'train_test_split.txt'}: image {number} is not in images.txt")
        if flag not in ("0", "1"):
            raise DatasetFormatError(
                f"{cub_root / 'train_test_split.txt'}: image {number} has flag {flag!r}, expected 0 or 1"
            )
        image = image_id(cub_root / "images" / paths[number], cub_root / "images")
        (train if flag == "1" else test).append(image)
    return sorted(train), sorted(test)


def _rows(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise DatasetMissingError(f"{path} does not exist (expected the CUB_200_2011 folder with images.txt)")
    rows = []
    # Read as every text list is (makd.formats.text_lists); an image number listed twice is refused, naming both
    # lines, since the second line would silently decide the image's path or split.
    listed = read_text_list(path, "CUB file", entry="image number", same=lambda line: line.split()[0],
                            error=DatasetFormatError)  # fmt: skip
    for number, line in zip(listed.lines, listed.entries):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DatasetFormatError(f"{path}:{number}: expected '<image number> <value>', got {line!r}")
        rows.append((parts[0], parts[1].strip()))
    return rows


def class_folder_ids(root: str | os.PathLike) -> tuple[list[str], list[int]]:
    """Ids and labels (sorted class-folder order) of a `root/<class>/<image>` tree."""
    ids = [image_id(f, root) for f in list_image_files(root)]
    flat = [i for i in ids if "/" not in i]
    if flat:
        raise DatasetFormatError(f"{root}: {flat[0]!r} is not inside a class folder (expected root/<class>/<image>)")
    classes = sorted({i.split("/", 1)[0] for i in ids})
    label_of = {name: label for label, name in enumerate(classes)}
    return ids, [label_of[i.split("/", 1)[0]] for i in ids]
