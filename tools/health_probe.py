"""Each loss term's size and gradient share over a config's first steps, before a run: python tools/health_probe.py
CONFIG [KEY VALUE ...] [--steps N] (docs/health.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.commands.health_probe import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
