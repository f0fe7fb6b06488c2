"""Aspect files (stage 2's output, stage 3's input), read strictly and written: `{image_id: [p_1, ..., p_Q]}`.

A JSON object with floats in [0, 1] per row (the released format), ids sorted; Q is derived from the rows. It may
have a sidecar `<file>.meta.json` (questions and their sha256, teacher, template, tokens, tiling, ...). The writer is
atomic. Files from elsewhere (JSON lines, duplicates, multiple choice) are read by makd.formats.tolerant_reader.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from makd.atomic_files import atomic_write_json, atomic_write_text
from makd.formats.errors import ArtifactError, DuplicateKeyError
from makd.formats.files import read_json, read_text_sha256, sidecar_path, utc_now
from makd.formats.strict_json import loads_json


@dataclass(frozen=True)
class AspectTable:
    """Aspect targets of an aspect file: `values[i]` is the row of `ids[i]`, shape [N, Q] float32."""

    ids: list[str]
    values: np.ndarray
    path: str = ""
    sha256: str = ""

    @property
    def num_aspects(self) -> int:
        return int(self.values.shape[1])

    def index(self) -> dict[str, int]:
        return {image_id: i for i, image_id in enumerate(self.ids)}


def validate_aspect_rows(rows: Mapping[str, Any], source: str, expected_aspects: int | None = None) -> np.ndarray:
    """Check rows {id: [p_1..p_Q]} and return them as float32 [N, Q] in the order of `rows`."""
    if not isinstance(rows, Mapping):
        raise ArtifactError(
            f"{source}: expected a JSON object {{image_id: [p_1, ..., p_Q]}}, got {type(rows).__name__}"
        )
    if not rows:
        raise ArtifactError(f"{source}: holds no rows")
    width = None
    out = []
    for image_id, row in rows.items():
        if not isinstance(row, (list, tuple)) or not row:
            raise ArtifactError(f"{source}: row {image_id!r} is not a non-empty list of probabilities")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise ArtifactError(f"{source}: row {image_id!r} has {len(row)} values, the first row has {width}")
        for q, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ArtifactError(f"{source}: row {image_id!r} question {q + 1} is {value!r}, not a finite number")
            if not 0.0 <= value <= 1.0:
                raise ArtifactError(f"{source}: row {image_id!r} question {q + 1} is {value}, outside [0, 1]")
        out.append(row)
    if expected_aspects is not None and width != expected_aspects:
        raise ArtifactError(
            f"{source}: rows have {width} aspects but {expected_aspects} are expected "
            f"(set MaKD.ASPECT_NUM {width} or use the matching aspect file)"
        )
    return np.asarray(out, dtype=np.float32)


def _key_lines(text: str, key: str) -> list[int]:
    """1-based lines of `text` where `key` appears as a JSON object key (either escaping of non-ASCII)."""
    spellings = {json.dumps(key, ensure_ascii=False), json.dumps(key)}
    pattern = re.compile("(?:" + "|".join(re.escape(s) for s in spellings) + r")\s*:")
    return [text.count("\n", 0, match.start()) + 1 for match in pattern.finditer(text)]


def read_aspect_text(path: str | os.PathLike) -> tuple[str, str]:
    """(text, sha256 of its bytes) of an aspect file, read once."""
    return read_text_sha256(
        path,
        "aspect file",
        missing_fix=" (set DATASET.ASPECT_JSON or run stage 2)",
        not_utf8_hint="; is it an aspect file?",
    )


def parse_aspect_text(
    text: str, path: str | os.PathLike, sha256: str = "", expected_aspects: int | None = None
) -> AspectTable:
    """The AspectTable of an aspect file's text; Q is derived from its rows and checked against `expected_aspects`."""
    try:
        rows = loads_json(text, str(path))
    except DuplicateKeyError as dup:
        if dup.where:  # inside a value, which is then no row of numbers anyway
            raise
        lines = _key_lines(text, dup.key) or list(dup.lines)
        raise ArtifactError(
            f"{path}: image id {dup.key!r} has {max(len(lines), 2)} rows (lines {', '.join(map(str, lines))}); "
            "JSON keeps only the last one, so keep one row per image id (re-run stage 2 or fix the file)"
        ) from None
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    values = validate_aspect_rows(rows, str(path), expected_aspects)
    return AspectTable(ids=list(rows), values=values, path=str(path), sha256=sha256)


def read_aspect_file(path: str | os.PathLike, expected_aspects: int | None = None) -> AspectTable:
    """Load and validate an aspect file; Q is derived from its rows and checked against `expected_aspects`."""
    text, digest = read_aspect_text(path)
    return parse_aspect_text(text, Path(path), digest, expected_aspects)


def write_aspect_file(
    path: str | os.PathLike, rows: Mapping[str, Sequence[float]], meta: Mapping[str, Any] | None = None
) -> None:
    """Validate and atomically write an aspect file with ids sorted (and its sidecar when `meta` is given)."""
    ordered = {k: [float(v) for v in rows[k]] for k in sorted(rows)}
    validate_aspect_rows(ordered, str(path))
    if meta is not None:
        atomic_write_json(sidecar_path(path), {"num_images": len(ordered), "date": utc_now(), **meta})
    # One row per line keeps multi-GB files diff-able and streamable without changing the JSON.
    body = ",\n".join(f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v)}" for k, v in ordered.items())
    atomic_write_text(path, "{\n" + body + "\n}\n")


def read_exact_rows(path: str | os.PathLike) -> dict[str, list[float]]:
    """The rows of an aspect file as its JSON floats themselves (an AspectTable holds float32 copies), in file
    order, unvalidated: for writing rows back unchanged after read_aspect_file has checked the file."""
    return read_json(path, "aspect file")
