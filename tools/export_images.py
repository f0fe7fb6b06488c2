"""Write a dataset split's images as <id>.png files for stage 2: export_images.py CONFIG OUT_DIR [--split test]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.commands.export_images import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
