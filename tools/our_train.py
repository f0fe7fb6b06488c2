"""Train a student with multi-aspect knowledge distillation: python tools/our_train.py CONFIG [KEY VALUE ...]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.commands.train import train_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
