"""A tolerant reader for aspect-like files: every (key, value) pair in file order, problems listed, not raised.

Accepted containers: one JSON object `{key: value, ...}` (this project's and LaViD's `.json`), or JSON
lines, one object per line (LaViD's `.jsonl`: `{"jpg/image_05656.jpg": [...]}`). A value is a yes/no
row `[p_1 .. p_Q]` or a multiple-choice block `[[p_q1 .. p_qM], ...]` (LaViD's per-class
distributions). Duplicate keys are kept as separate pairs (json.load would silently keep the last).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from makd.formats.errors import ArtifactError
from makd.formats.files import BYTE_ORDER_MARK, read_text_sha256

MAX_LISTED = 5  # problems quoted per kind; the rest are counted


class _Pairs(list):
    """A JSON object kept as its list of (key, value) pairs, duplicates included."""


@dataclass
class RawAspectFile:
    """The pairs of one file in file order, the container format and the problems met while parsing."""

    path: str
    format: str  # "json" or "jsonl"
    pairs: list[tuple[str, Any]]
    sha256: str
    problems: list[str] = field(default_factory=list)


def read_raw(path: str | os.PathLike) -> RawAspectFile:
    """Parse `path` without validating values; malformed JSON lines become problems, not errors.

    Raises ArtifactError only when nothing can be read (missing file, not UTF-8, not JSON at all, a
    pickle: see docs/aspect_files.md for why pickles are not read).
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"aspect file {path} does not exist")
    refuse_pickle(path)
    return parse_raw(path, *read_text_sha256(path, "aspect file", encoding="utf-8-sig"))


def refuse_pickle(path: str | os.PathLike) -> None:
    """An ArtifactError for a pickled aspect file (see docs/aspect_files.md for why pickles are not read)."""
    if Path(path).suffix.lower() in (".pkl", ".pickle", ".pt", ".pth"):
        raise ArtifactError(
            f"{path}: pickled aspect files are not read (unpickling runs code, and the official pickles index "
            "images by position in a dataset pickle that is not public); see docs/aspect_files.md"
        )


def parse_raw(path: str | os.PathLike, text: str, digest: str) -> RawAspectFile:
    """read_raw on a file's text already read (`digest`: the sha256 of its bytes); a leading BOM is ignored."""
    path = Path(path)
    text = text.removeprefix(BYTE_ORDER_MARK)
    if path.suffix.lower() != ".jsonl":
        try:
            value = json.loads(text, object_pairs_hook=_Pairs)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":  # "Extra data" after the first object: JSON lines without the suffix
                where = f"line {err.lineno} column {err.colno}"
                rows = _read_row_lines(path, text, digest, f"not valid JSON ({err.msg} at {where})")
                if rows is not None:
                    return rows
                raise ArtifactError(f"{path}: not valid JSON ({err.msg} at {where})") from None
        else:
            if not isinstance(value, _Pairs):
                raise ArtifactError(f"{path}: expected a JSON object {{key: [values]}}, got {type(value).__name__}")
            return RawAspectFile(str(path), "json", [(k, _plain(v)) for k, v in value], digest)
    return _read_lines(path, text, digest)


def _read_lines(path: Path, text: str, digest: str) -> RawAspectFile:
    pairs: list[tuple[str, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_Pairs)
        except json.JSONDecodeError as err:
            problems.append(f"line {number}: not JSON ({err.msg})")
            continue
        if not isinstance(value, _Pairs):
            problems.append(f"line {number}: a {type(value).__name__}, not an object {{key: [values]}}")
            continue
        pairs.extend((k, _plain(v)) for k, v in value)
    if not pairs and problems:
        raise ArtifactError(f"{path}: no line is a JSON object ({problems[0]})")
    return RawAspectFile(str(path), "jsonl", pairs, digest, problems)


def _read_row_lines(path: Path, text: str, digest: str, whole_file_error: str) -> RawAspectFile | None:
    """A broken JSON object written one row per line (`"key": [...],`, as write_aspect_file does): the
    rows that parse, and a problem per line that does not; None when the file is not in that shape."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "{":
        return None
    pairs: list[tuple[str, Any]] = []
    problems = [f"the file as a whole is {whole_file_error}"]
    for number, line in enumerate(lines[1:], start=2):
        body = line.strip().rstrip(",")
        if body in ("", "}"):
            continue
        try:
            value = json.loads("{" + body + "}", object_pairs_hook=_Pairs)
        except json.JSONDecodeError as err:
            problems.append(f'line {number}: not a `"key": [values]` row ({err.msg})')
            continue
        pairs.extend((k, _plain(v)) for k, v in value)
    if not pairs:
        return None
    return RawAspectFile(str(path), "json (one row per line, damaged)", pairs, digest, problems)


def _plain(value: Any) -> Any:
    """Nested objects back to dicts (only the top level keeps its duplicate keys)."""
    if isinstance(value, _Pairs):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- value shapes
def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def value_shape(value: Any) -> tuple[int, ...] | str:
    """(Q,) for a yes/no row, (Q, M_1, .., M_Q) for a multiple-choice block, or a string saying what is wrong."""
    if not isinstance(value, list) or not value:
        return f"not a non-empty list ({type(value).__name__})"
    if all(is_number(v) for v in value):
        return (len(value),)
    if all(isinstance(v, list) and v and all(is_number(x) for x in v) for v in value):
        return (len(value), *(len(v) for v in value))
    return "mixes numbers and lists, or holds other values"


def value_problems(key: str, value: Any) -> list[str]:
    """Non-numbers, NaN/inf and values outside [0, 1] in one pair's value (empty when all is well), each named by
    its question (and option) counted from 1."""
    shape = value_shape(value)
    if isinstance(shape, str):
        return [f"{key!r}: {shape}"]
    if len(shape) == 1:
        named = [(f"question {q + 1}", x) for q, x in enumerate(value)]
    else:
        named = [(f"question {q + 1} option {o + 1}", x) for q, row in enumerate(value) for o, x in enumerate(row)]
    out = []
    for where, x in named:
        if not math.isfinite(x):
            out.append(f"{key!r}: {where} is {x}")
        elif not 0.0 <= x <= 1.0:
            out.append(f"{key!r}: {where} is {x}, outside [0, 1]")
    return out


def flatten_values(value: Sequence[Any]) -> list[float]:
    """A yes/no row as is; a multiple-choice block row-major (question 1's options, then question 2's, ...)."""
    if value and isinstance(value[0], list):
        return [float(x) for row in value for x in row]
    return [float(x) for x in value]
