"""A starting config for a folder of images: python tools/init_config.py DATA_DIR --out my.yaml

DATA_DIR holds train/<class>/<image> and test/<class>/<image>; see makd/commands/init_config.py and the README's
"Your own images".
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.commands.init_config import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
