"""Join the aspect files of `--shard I/N` runs into one, checking completeness. Logic: makd.mllm.merge."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.commands.stage2 import merge_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(merge_main())
