"""Made-up photos in class folders, to try the quickstart without images of your own:
python tools/make_photo_folders.py data/mine [--classes 5 --train-per-class 40 --test-per-class 10]

Writes DATA/train/<class>/*.jpg|png and DATA/test/<class>/... of varied sizes (makd/demo/photos.py). No teacher
comes with them: run stage 2 on them (README, "Your own images").
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.demo.photos import CLASSES, write_photo_folders  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make_photo_folders.py", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the dataset folder to write (train/ and test/ inside)")
    parser.add_argument("--classes", type=int, default=5, help=f"number of classes, 2 to {len(CLASSES)} (default 5)")
    parser.add_argument("--train-per-class", type=int, default=40, help="training images per class (default 40)")
    parser.add_argument("--test-per-class", type=int, default=10, help="test images per class (default 10)")
    parser.add_argument("--min-side", type=int, default=96, help="shortest shorter side in px (default 96)")
    parser.add_argument("--max-side", type=int, default=160, help="longest shorter side in px (default 160)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        summary = write_photo_folders(args.out, classes=args.classes, train_per_class=args.train_per_class,
                                      test_per_class=args.test_per_class, min_side=args.min_side,
                                      max_side=args.max_side, seed=args.seed, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary['num_train']} train + {summary['num_test']} test photo-like images of "
          f"{len(summary['classes'])} classes ({', '.join(summary['classes'])}) to {args.out} in "
          f"{time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
