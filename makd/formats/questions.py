"""Questions files (stage 1's output, stage 2's input): read, validate and write.

A questions file is UTF-8 text, one yes/no question per line, no numbering, no blank lines; it may have a sidecar
`<file>.meta.json` (classes, model, prompts, N, Q, raw replies, date). The writer is atomic (temp file in the same
folder + os.replace), so an interrupted run never leaves half a file. Class-level questions files (with options)
are makd.formats.class_questions.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from makd.atomic_files import atomic_write_json, atomic_write_text
from makd.formats.class_mentions import class_name_leak
from makd.formats.errors import ArtifactError
from makd.formats.files import read_text_sha256, sha256_text, sidecar_path, utc_now
from makd.formats.text_lists import parse_text_list

# Words a closed (yes/no) English question starts with.
YES_NO_STARTERS = frozenset(
    "is are am was were do does did can could has have had will would should shall may might must".split()
)
_NUMBERING = re.compile(r"^\s*(?:\d+[.)\]:]|[-*\u2022]|\(\d+\))\s*")
MAX_QUESTION_CHARS = 300
# Abbreviations whose period ends no sentence ("(e.g. glass)", "i.e.", "vs.", "etc."), matched case-blind.
_ABBREVIATIONS = re.compile(r"\b(?:e\.\s?g|i\.\s?e|vs|etc|approx|cf|incl|esp|ca|resp|mr|mrs|ms|dr|st)\.", re.IGNORECASE)
log = logging.getLogger("makd.formats.questions")


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

    Read as every text list is (makd.formats.text_lists): a UTF-8 byte-order mark (Windows editors add one) is
    removed with a warning (left in, it would become part of the first question and change the teacher's answers,
    seen: P(yes) 0.92 -> 0.82), CRLF line ends too, blank lines are ignored and a repeated question (compared as
    `normalize_text`) is an error naming both lines. Question numbers (DATASET.ASPECT_SOURCES) count questions, not
    lines. Leading, trailing and repeated spaces or tabs (as LLM output often has) are normalised to single
    spaces, with one warning naming the first such line; the normalised questions are returned.
    """
    listed = parse_text_list(text, source, entry="question", same=normalize_text)
    if not listed.entries:
        raise ArtifactError(f"{source}: the questions file is empty (expected one question per line)")
    questions: list[str] = []
    respaced: set[int] = set(listed.trimmed)
    for number, line in zip(listed.lines, listed.entries):
        normalised = " ".join(line.split())
        if normalised != line:
            respaced.add(number)
            line = normalised
        if _NUMBERING.match(line):
            raise ArtifactError(f"{source}:{number}: numbering or bullet in {line!r} (write the bare question)")
        if not line.endswith("?"):
            raise ArtifactError(f"{source}:{number}: {line!r} is not a question (must end with '?')")
        questions.append(line)
    if respaced:
        log.warning(
            "%s: normalised leading, trailing or repeated whitespace on %d line(s) (first: line %d); "
            "the questions are used without it",
            source,
            len(respaced),
            min(respaced),
        )
    return questions


def read_questions_text(path: str | os.PathLike, what: str = "questions file") -> tuple[str, str]:
    """(text, sha256 of the bytes) of a questions file, line ends as written (the list reader warns about CRLF)."""
    return read_text_sha256(path, what, universal_newlines=False)


def read_questions(path: str | os.PathLike, expected_count: int | None = None) -> list[str]:
    """Questions of a questions file, validated; `expected_count` (Q) is checked when given."""
    path = Path(path)
    questions = parse_questions_text(read_questions_text(path)[0], str(path))
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
