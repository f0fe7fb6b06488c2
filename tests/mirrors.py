"""Where the tests find git mirrors of the public repositories they compare against (no test downloads one).

`MAKD_MIRRORS` names a folder holding `<owner>+<name>/repo` git directories (bare or not); by default the
`.mirror` folder beside this checkout's parent folder. Tests that need a mirror skip with a one-line reason
when it is absent (docs/testing.md says how to provide one).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("MAKD_MIRRORS") or Path(__file__).resolve().parents[2] / ".mirror")


def mirror(repository: str) -> Path:
    """The git directory of `owner/name`'s mirror (may not exist)."""
    return ROOT / repository.replace("/", "+") / "repo"


def absent_reason(repository: str) -> str:
    return f"no mirror of {repository} under {ROOT} (set MAKD_MIRRORS; see docs/testing.md)"
