"""Write a dataset split's images as <id>.png files for stage 2: export_images.py CONFIG OUT_DIR [--split test]."""

import sys

from makd.data.export import main

if __name__ == "__main__":
    sys.exit(main())
