"""Inspect, convert and audit aspect files: python tools/aspects.py {inspect,convert,audit} (docs/aspect_files.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.commands.aspects import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
