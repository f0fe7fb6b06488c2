"""The errors of the stage files: a bad or missing file of a stage, or of a dataset's images."""

from __future__ import annotations

from makd.errors import MakdError


class ArtifactError(MakdError, ValueError):
    """A stage artifact (questions or aspect file) is missing, malformed or inconsistent."""


class DatasetMissingError(MakdError, FileNotFoundError):
    """A dataset's files are not where the configuration says they are."""


class DatasetFormatError(MakdError, ValueError):
    """A dataset's files are there but not laid out or written as expected (two files share an id, a bad row)."""


class DuplicateKeyError(MakdError, ValueError):
    """A JSON object or YAML mapping names one key twice; parsers keep the last value and silently drop the first.

    `key` is the repeated key, `where` the mapping holding it ("" = the top level, else a path such as
    "annotations[3]" or "SOLVER") and `lines` the 1-based lines of its two occurrences.
    """

    def __init__(self, message: str, key: str, where: str, lines: tuple[int, int]) -> None:
        super().__init__(message)
        self.key, self.where, self.lines = key, where, lines


def line_pair(lines: tuple[int, int]) -> str:
    """ "lines 3 and 17", or "line 3 (twice)" when both are on one line."""
    return f"line {lines[0]} (twice)" if lines[0] == lines[1] else f"lines {lines[0]} and {lines[1]}"
