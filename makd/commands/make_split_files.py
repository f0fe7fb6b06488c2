"""`python tools/make_split_files.py {cub,stratified}`: write train.txt and test.txt split files (docs/data.md)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from makd.data.splits import class_folder_ids, cub_split_ids, stratified_split
from makd.errors import MakdError
from makd.formats.split_files import write_split_file


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
