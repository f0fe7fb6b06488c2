"""Text lists, one entry a line: class lists (stage 1, stage 2 `--level class`), questions files and split files.

Every such file goes through `read_text_list` / `parse_text_list`, so they all read alike:
- a UTF-8 byte-order mark at the start (Windows editors add one) is removed with a warning; left in, it became part
  of the first class name, reached the prompts and the output keys, and hid a repeated class ("\\ufeffcat" is not
  "cat"). One inside the text (two files joined) is an error naming its line;
- Windows (CRLF) and old Mac (CR) line ends are read as "\\n", with a warning;
- leading and trailing spaces of an entry are removed, blank lines ignored (and, where the kind allows comments,
  lines starting with "#");
- an entry repeated (as the kind compares them: case-folded class names, normalised questions, exact ids) is an
  error naming both lines, since a repeat means the list is not what its author thinks it is.
Line numbers in messages are the file's own lines, blank lines counted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from makd.formats.errors import ArtifactError
from makd.formats.files import BYTE_ORDER_MARK, read_text_sha256

log = logging.getLogger("makd.formats.text_lists")


@dataclass(frozen=True)
class TextList:
    """The entries of a text list in file order, the 1-based line of each, and the sha256 of the file's bytes.

    `trimmed` lists the lines whose entry had leading or trailing whitespace removed (a reader may warn about it).
    """

    entries: list[str]
    lines: list[int]
    source: str
    sha256: str = ""
    trimmed: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)


def _exact(entry: str) -> str:
    return entry


def parse_text_list(
    text: str,
    source: str,
    *,
    entry: str = "entry",
    same: Callable[[str], Hashable] = _exact,
    comments: bool = False,
    error: type[Exception] = ArtifactError,
    sha256: str = "",
) -> TextList:
    """The entries of a text list's `text` (see the module docstring); `entry` names one in messages ("class"),
    `same(entry)` is the form two entries are compared in, `error` the class of the one-line errors."""
    if text.startswith(BYTE_ORDER_MARK):
        log.warning("%s: removed the UTF-8 byte-order mark at the start of the file (it is not part of any %s)",
                    source, entry)  # fmt: skip
        text = text[len(BYTE_ORDER_MARK) :]
    if "\r" in text:
        log.warning("%s: read its Windows (CRLF) or CR line ends as plain line ends", source)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    entries: list[str] = []
    lines: list[int] = []
    trimmed: list[int] = []
    first_line: dict[Hashable, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        if BYTE_ORDER_MARK in raw:
            raise error(f"{source}:{number}: holds a byte-order mark (U+FEFF) inside the text (files joined?); "
                        "remove it")  # fmt: skip
        value = raw.strip()
        if not value or (comments and value.startswith("#")):
            continue
        key = same(value)
        if key in first_line:
            raise error(f"{source}:{number}: {entry} {value!r} repeats line {first_line[key]}; list each {entry} once")
        first_line[key] = number
        entries.append(value)
        lines.append(number)
        if value != raw:
            trimmed.append(number)
    return TextList(entries, lines, source, sha256, trimmed)


def read_text_list(
    path: str | os.PathLike,
    what: str,
    *,
    entry: str = "entry",
    same: Callable[[str], Hashable] = _exact,
    comments: bool = False,
    error: type[Exception] = ArtifactError,
    missing_fix: str = "",
) -> TextList:
    """parse_text_list of file `path` (named `what` in messages: "class list", "split file"); a missing, unreadable
    or non-UTF-8 file is one `error` line."""
    try:
        text, digest = read_text_sha256(path, what, missing_fix=missing_fix, universal_newlines=False)
    except ArtifactError as err:
        raise error(str(err)) from None
    return parse_text_list(text, str(path), entry=entry, same=same, comments=comments, error=error, sha256=digest)
