"""The errors of the stage files: a bad or missing file of a stage, or of a dataset's images."""

from __future__ import annotations

from makd.errors import MakdError


class ArtifactError(MakdError, ValueError):
    """A stage artifact (questions or aspect file) is missing, malformed or inconsistent."""


class DatasetMissingError(MakdError, FileNotFoundError):
    """A dataset's files are not where the configuration says they are."""


class DatasetFormatError(MakdError, ValueError):
    """A dataset's files are there but not laid out or written as expected (two files share an id, a bad row)."""
