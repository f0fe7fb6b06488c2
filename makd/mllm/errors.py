"""The error of stage 2: the run cannot start or go on."""

from __future__ import annotations

from makd.errors import MakdError


class ExtractionError(MakdError, RuntimeError):
    """The run cannot start or go on (bad input, an existing output, a strict-mode image failure)."""
