"""Score a saved student: python tools/eval.py CONFIG CHECKPOINT [--split test|val|train] [--out DIR] [--json]
[KEY VALUE ...]: top-1 / top-5, per-class accuracy (worst first) and the most frequent mistakes, the confusion
matrix as CSV and figure, the per-class CSV (in DIR, default <run folder>_eval beside the run folder)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.commands.train import eval_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return eval_main(argv)


if __name__ == "__main__":
    sys.exit(main())
