"""The one root of user errors and the one way every command reports them.

A user error (bad config, file, image, reply, environment) is a `MakdError`: the command prints
`error: <one line>` on stderr and exits with `USER_ERROR_EXIT_CODE`. Anything else is a bug in
makd and keeps its traceback. Ctrl-C prints how to continue and exits with 130 (the shell's
convention for SIGINT).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130


class MakdError(Exception):
    """A problem with the user's input or environment, explained in one line (name the value, place and fix)."""


class ConfigError(MakdError, ValueError):
    """A configuration value is unknown, of the wrong type or inconsistent with the data.

    Defined here, below every layer, since the readers of the stage files and the methods check config values too.
    """


def one_line(message: str) -> str:
    """`message` with newlines folded, so an error from a library never spreads over several lines."""
    return " ".join(str(message).split())


def run_command(
    body: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None,
    resume_hint: str | Callable[[Sequence[str] | None], str] = "",
) -> int:
    """Run a command body: a MakdError becomes one line and exit code 2, Ctrl-C one line and 130.

    `resume_hint` says how to continue after Ctrl-C (a string, or a function of argv).
    """
    try:
        return body(argv)
    except MakdError as err:
        print(f"error: {one_line(err.args[0] if err.args else type(err).__name__)}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except KeyboardInterrupt:
        hint = resume_hint(argv) if callable(resume_hint) else resume_hint
        print(f"interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
