"""Write scikit-learn's handwritten digits as a CIFAR-shaped image set (32-px RGB class folders, 1,438 train / 359
test) with LaViD-shaped per-class target files: python tools/make_digits.py --out data/digits (docs/health.md)."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.demo.digits import write_digits  # noqa: E402
from makd.errors import run_command  # noqa: E402


def _body(argv) -> int:
    parser = argparse.ArgumentParser(prog="make_digits.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/digits", help="output folder (default: data/digits)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the random class targets")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    args = parser.parse_args(argv)
    info = write_digits(args.out, seed=args.seed, overwrite=args.overwrite)
    print(
        f"[digits] wrote {info['train']} train + {info['test']} test images of 10 classes and "
        f"{', '.join(info['files'])} to {args.out}"
    )
    return 0


def main(argv=None) -> int:
    return run_command(_body, argv)


if __name__ == "__main__":
    sys.exit(main())
