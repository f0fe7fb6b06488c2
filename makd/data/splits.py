"""Which images go to which split: the stratified carve, split files, and the make_split_files command.

A split file is UTF-8 text with one image id per line (path relative to the image root, POSIX
separators, no extension: the makd.formats.image_ids rule).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from makd.atomic_files import atomic_write_text
from makd.errors import ConfigError, MakdError
from makd.formats.errors import DatasetFormatError, DatasetMissingError
from makd.formats.image_ids import image_id, list_image_files


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


def read_split_file(path: str, key: str, known_ids: Sequence[str], root: str) -> list[int]:
    """Positions in `known_ids` of the ids listed in split file `path` (config key `key`), sorted.

    Blank lines are ignored; an unknown or repeated id is a one-line ConfigError.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"{key} {path} does not exist (make it with tools/make_split_files.py)")
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
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
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
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


def main(argv: Sequence[str] | None = None) -> int:
    """Write train.txt and test.txt split files (see docs/data.md)."""
    parser = argparse.ArgumentParser(prog="make_split_files.py", description=main.__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    cub = sub.add_parser("cub", help="CUB-200-2011's official split (images.txt + train_test_split.txt)")
    cub.add_argument("cub_root", help="the CUB_200_2011 folder (holds images/, images.txt, train_test_split.txt)")
    strat = sub.add_parser("stratified", help="hold out a fixed fraction of every class folder (Mini-ImageNet, ...)")
    strat.add_argument("root", help="image root with one folder per class")
    strat.add_argument("--test-fraction", type=float, default=0.2, help="share of each class put in test.txt")
    strat.add_argument("--seed", type=int, default=0, help="seed of the carve (same seed, same files)")
    for p in (cub, strat):
        p.add_argument("--out-dir", required=True, help="folder for train.txt and test.txt")
    args = parser.parse_args(argv)
    try:
        if args.mode == "cub":
            train, test = cub_split_ids(args.cub_root)
        else:
            ids, labels = class_folder_ids(args.root)
            kept, held = stratified_split(ids, labels, args.test_fraction, args.seed)
            train, test = [ids[p] for p in kept], [ids[p] for p in held]
    except (MakdError, OSError) as err:
        parser.exit(2, f"make_split_files.py: error: {err}\n")
    write_split_file(Path(args.out_dir) / "train.txt", train)
    write_split_file(Path(args.out_dir) / "test.txt", test)
    print(f"wrote {len(train)} train and {len(test)} test ids to {args.out_dir}/train.txt and test.txt")
    return 0
