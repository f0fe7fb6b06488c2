"""The one error type of the student factory: a one-line message naming the bad value, the place and the fix."""

from makd.errors import MakdError


class StudentError(MakdError, ValueError):
    """A student cannot be built or loaded as asked (unknown name, unwidened head, checkpoint mismatch)."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (or its type name), to quote a library error in one line."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
