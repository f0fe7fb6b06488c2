"""Read, validate and write the files that pass between stages: questions files and aspect files.

Questions file: UTF-8 text, one question per line, no numbering, no blank lines.
Aspect file: JSON object {image_id: [p_1, ..., p_Q]} with floats in [0, 1] (the released format).
Each may have a sidecar `<file>.meta.json` describing how it was made. Writers are atomic
(temp file in the same folder + os.replace) so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from makd.atomic_files import atomic_write_json, atomic_write_text
from makd.formats.class_mentions import class_name_leak
from makd.formats.errors import ArtifactError

# Words a closed (yes/no) English question starts with.
YES_NO_STARTERS = frozenset(
    "is are am was were do does did can could has have had will would should shall may might must".split()
)
BYTE_ORDER_MARK = "\ufeff"
_NUMBERING = re.compile(r"^\s*(?:\d+[.)\]:]|[-*\u2022]|\(\d+\))\s*")
MAX_QUESTION_CHARS = 300
# Abbreviations whose period ends no sentence ("(e.g. glass)", "i.e.", "vs.", "etc."), matched case-blind.
_ABBREVIATIONS = re.compile(r"\b(?:e\.\s?g|i\.\s?e|vs|etc|approx|cf|incl|esp|ca|resp|mr|mrs|ms|dr|st)\.", re.IGNORECASE)
log = logging.getLogger("makd.formats.questions")


# ----------------------------------------------------------------------------- generic helpers
def sidecar_path(path: str | os.PathLike) -> Path:
    """`<file>.meta.json` next to `path` (full file name kept, so x.txt and x.json never collide)."""
    return Path(str(path) + ".meta.json")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The sidecar of `path` as a dict, or None when there is none."""
    meta = sidecar_path(path)
    if not meta.exists():
        return None
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{meta}: not valid JSON ({err.msg} at line {err.lineno})") from None


# ----------------------------------------------------------------------------- questions files
def question_problem(
    text: str,
    class_names: Iterable[str] = (),
    allow_class_names: bool = False,
    *,
    leak_rule: str = "names_object",
    allowed_names: Iterable[str] = (),
) -> str | None:
    """Why `text` is not an acceptable yes/no aspect question, or None when it is.

    Acceptable: one line, one sentence ending in a single "?" (abbreviations such as "e.g." and "vs."
    end no sentence), first word a yes/no starter ("Is", "Does", "Can", ...), at most 300 characters,
    and (unless allowed) no class name where it names the object (makd.formats.class_mentions, rule
    `leak_rule`; `allowed_names` never count), since such a question leaks the label instead of
    describing an aspect. Surrounding and repeated whitespace is ignored.
    """
    stripped = text.strip()
    if not stripped:
        return "empty question"
    if "\n" in stripped or "\r" in stripped:
        return "spans more than one line"
    stripped = " ".join(stripped.split())
    if len(stripped) > MAX_QUESTION_CHARS:
        return f"longer than {MAX_QUESTION_CHARS} characters"
    if _NUMBERING.match(stripped):
        return "starts with numbering or a bullet"
    if not stripped.endswith("?"):
        return "does not end with '?'"
    if stripped.count("?") > 1:
        return "holds more than one question mark"
    if re.search(r"[.!;]\s+\w", _ABBREVIATIONS.sub("abbr", stripped[:-1])):
        return "holds more than one sentence"
    first = re.split(r"[\s,]+", stripped, maxsplit=1)[0].lower()
    if first not in YES_NO_STARTERS:
        return f"does not start like a yes/no question ({first!r})"
    if not allow_class_names:
        leaked = class_name_leak(stripped, class_names, leak_rule, allowed_names)
        if leaked is not None:
            return f"names the class {leaked!r}"
    return None


def normalize_text(text: str) -> str:
    """Lower-case words only (punctuation, underscores and repeated spaces removed)."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower().replace("_", " ")).split())


def parse_questions_text(text: str, source: str = "<questions>") -> list[str]:
    """Questions of a questions file's text; raises ArtifactError on the first malformed line.

    A UTF-8 byte-order mark (Windows editors add one) is removed with a warning: left in, it would become
    part of the first question and change the teacher's answers (seen: P(yes) 0.92 -> 0.82).
    Leading, trailing and repeated spaces or tabs (as LLM output often has) are normalised to single
    spaces, with one warning naming the first such line; the normalised questions are returned.
    """
    if text.startswith(BYTE_ORDER_MARK):
        log.warning("%s: removed the UTF-8 byte-order mark at the start of the file (it is not part of a question)",
                    source)  # fmt: skip
        text = text[len(BYTE_ORDER_MARK) :]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    if not lines:
        raise ArtifactError(f"{source}: the questions file is empty (expected one question per line)")
    questions: list[str] = []
    seen: dict[str, int] = {}
    respaced: list[int] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            raise ArtifactError(f"{source}:{number}: blank line (one question per line, no blank lines)")
        if BYTE_ORDER_MARK in line:
            raise ArtifactError(f"{source}:{number}: holds a byte-order mark (U+FEFF) inside the text; remove it")
        normalised = " ".join(line.split())
        if normalised != line:
            respaced.append(number)
            line = normalised
        if _NUMBERING.match(line):
            raise ArtifactError(f"{source}:{number}: numbering or bullet in {line!r} (write the bare question)")
        if not line.endswith("?"):
            raise ArtifactError(f"{source}:{number}: {line!r} is not a question (must end with '?')")
        key = normalize_text(line)
        if key in seen:
            raise ArtifactError(f"{source}:{number}: repeats the question of line {seen[key]}: {line!r}")
        seen[key] = number
        questions.append(line)
    if respaced:
        log.warning(
            "%s: normalised leading, trailing or repeated whitespace on %d line(s) (first: line %d); "
            "the questions are used without it",
            source,
            len(respaced),
            respaced[0],
        )
    return questions


def read_text_sha256(
    path: str | os.PathLike, what: str, encoding: str = "utf-8", missing_fix: str = "", not_utf8_hint: str = ""
) -> tuple[str, str]:
    """(text, sha256 of the bytes) of `path`, read once; missing, unreadable or not UTF-8 is one ArtifactError line.

    Line ends are read as Path.read_text reads them (universal newlines: "\\r\\n" and "\\r" become "\\n").
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} {path} does not exist{missing_fix}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"{what} {path} cannot be read ({err.strerror or err})") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}){not_utf8_hint}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n"), hashlib.sha256(data).hexdigest()


def read_utf8_text(path: str | os.PathLike, what: str, encoding: str = "utf-8") -> str:
    """The text of `path`; a missing file or bytes that are not UTF-8 are one ArtifactError line naming `what`."""
    return read_text_sha256(path, what, encoding)[0]


def read_questions(path: str | os.PathLike, expected_count: int | None = None) -> list[str]:
    """Questions of a questions file, validated; `expected_count` (Q) is checked when given."""
    path = Path(path)
    questions = parse_questions_text(read_utf8_text(path, "questions file"), str(path))
    if expected_count is not None and len(questions) != expected_count:
        raise ArtifactError(f"{path}: holds {len(questions)} questions but {expected_count} were expected")
    return questions


def questions_text(questions: Sequence[str]) -> str:
    """The normalised text of a questions file: each question and "\\n", nothing else (no BOM, no "\\r")."""
    return "".join(q.strip() + "\n" for q in questions)


def questions_sha256(questions: Sequence[str]) -> str:
    """sha256 of the normalised text; equals the file's sha256 for a clean file (no BOM, "\\n" line ends)."""
    return sha256_text(questions_text(questions))


def write_questions(
    path: str | os.PathLike,
    questions: Sequence[str],
    meta: Mapping[str, Any] | None = None,
    *,
    parse: Callable[[str, str], Any] = parse_questions_text,
) -> None:
    """Validate and atomically write a questions file (and its sidecar when `meta` is given); `parse(text, where)`
    is the reader the file must pass (yes/no questions by default; class-level files pass their own)."""
    text = questions_text(questions)
    parse(text, str(path))  # refuse to write what could not be read back
    if meta is not None:
        full = {"num_questions": len(questions), "sha256": sha256_text(text), "date": utc_now(), **meta}
        atomic_write_json(sidecar_path(path), full)
    atomic_write_text(path, text)


# ----------------------------------------------------------------------------- aspect files
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
                raise ArtifactError(f"{source}: row {image_id!r} value {q} is {value!r}, not a finite number")
            if not 0.0 <= value <= 1.0:
                raise ArtifactError(f"{source}: row {image_id!r} value {q} is {value}, outside [0, 1]")
        out.append(row)
    if expected_aspects is not None and width != expected_aspects:
        raise ArtifactError(
            f"{source}: rows have {width} aspects but {expected_aspects} are expected "
            f"(set MaKD.ASPECT_NUM {width} or use the matching aspect file)"
        )
    return np.asarray(out, dtype=np.float32)


class _DuplicateKey(Exception):
    """A JSON object names the same key twice (json.load would silently keep the last value)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook for json.loads: the object as a dict, or _DuplicateKey on a repeated key."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


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
        rows = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except _DuplicateKey as dup:
        lines = _key_lines(text, dup.key)
        raise ArtifactError(
            f"{path}: image id {dup.key!r} has {max(len(lines), 2)} rows (lines {', '.join(map(str, lines)) or '?'}); "
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
