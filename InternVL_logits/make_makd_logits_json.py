"""Stage 2 command: images x questions -> P(yes) aspect file. The logic lives in makd.mllm (see `--help`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.commands.stage2 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
