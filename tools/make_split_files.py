"""Write train.txt / test.txt split files: make_split_files.py cub CUB_200_2011 --out-dir DIR
or make_split_files.py stratified ROOT --test-fraction 0.2 --seed 0 --out-dir DIR."""

import sys

from makd.data.splits import main

if __name__ == "__main__":
    sys.exit(main())
