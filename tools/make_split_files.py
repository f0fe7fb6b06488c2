"""Write train.txt / test.txt split files: make_split_files.py cub CUB_200_2011 --out-dir DIR
or make_split_files.py stratified ROOT --test-fraction 0.2 --seed 0 --out-dir DIR."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.commands.make_split_files import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
