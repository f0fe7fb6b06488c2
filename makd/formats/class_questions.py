"""Class-level questions files (LaViD-style class-level teachers): read, validate and write.

A class-level questions file is UTF-8 text, one question per line, like a stage-1 questions file. A yes/no
line is the question alone; a multiple-choice line is the question and its M options separated by " | ":
    What is the main colour of the <object>'s coat? | Black | White | Brown | Grey | Mixed
`<object>` stands for the class name (makd.mllm.class_prompts puts the questions to the teacher). LaViD's own
question files (a question line, numbered options, blank lines between) are read too.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from makd.formats.errors import ArtifactError
from makd.formats.files import BYTE_ORDER_MARK
from makd.formats.questions import normalize_text, read_questions_text, write_questions
from makd.formats.text_lists import parse_text_list

PLACEHOLDER = "<object>"
OPTION_SEPARATOR = " | "
OPTION_LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class ClassQuestion:
    """One question: its text (maybe with `<object>`) and its options (empty for a yes/no question)."""

    text: str
    options: tuple[str, ...] = ()

    @property
    def is_multiple_choice(self) -> bool:
        return bool(self.options)

    def line(self) -> str:
        return OPTION_SEPARATOR.join([self.text, *self.options])


def parse_class_questions(text: str, source: str = "<questions>") -> list[ClassQuestion]:
    """The questions of a class-level questions file; all yes/no or all multiple-choice (M may differ).

    Read as every text list is (makd.formats.text_lists: BOM and CRLF removed with a warning, blank lines ignored,
    a repeated line an error naming both)."""
    questions: list[ClassQuestion] = []
    listed = parse_text_list(text, source, entry="question", same=normalize_text)
    for number, line in zip(listed.lines, listed.entries):
        parts = [p.strip() for p in line.split("|")]
        question, options = parts[0], tuple(parts[1:])
        if not question or any(not o for o in options):
            raise ArtifactError(f"{source}:{number}: empty question or option in {line[:80]!r}")
        if len(options) == 1:
            raise ArtifactError(f"{source}:{number}: one option only; a multiple-choice line needs at least 2")
        if len(options) > len(OPTION_LETTERS):
            raise ArtifactError(f"{source}:{number}: {len(options)} options; at most {len(OPTION_LETTERS)} (A..Z)")
        if len(set(o.casefold() for o in options)) != len(options):
            raise ArtifactError(f"{source}:{number}: repeated option in {line[:80]!r}")
        questions.append(ClassQuestion(question, options))
    if not questions:
        raise ArtifactError(f"{source}: holds no questions")
    kinds = {q.is_multiple_choice for q in questions}
    if len(kinds) > 1:
        first_yes_no = next(i for i, q in enumerate(questions, start=1) if not q.is_multiple_choice)
        raise ArtifactError(
            f"{source}:{first_yes_no}: a yes/no line in a multiple-choice file; keep one kind per file "
            "(the output is either [p_1..p_Q] or [[p_q1..p_qM], ...] per class)"
        )
    return questions


# "    1. Mostly black"; 8 of LaViD's 32 files do not indent their options ("1. Ground").
_LAVID_OPTION = re.compile(r"^\s*\d+[.)]\s*(.+?)\s*$")


def lavid_placeholder(question: str) -> str:
    """LaViD names the class as "the class": that phrase becomes "the <object>"."""
    return re.sub(r"\bthe class\b", f"the {PLACEHOLDER}", question, flags=re.IGNORECASE)


def is_lavid_block_text(text: str) -> bool:
    """LaViD's question files: a question line, then numbered options (indented or not), blocks split by blank
    lines. Recognised by a numbered line right after a line that is not one (a question and its first option)."""
    lines = text.splitlines()
    return any(
        _LAVID_OPTION.match(line) and previous.strip() and not _LAVID_OPTION.match(previous)
        for previous, line in zip(lines, lines[1:])
    )


def parse_lavid_questions(text: str, source: str = "<questions>") -> list[ClassQuestion]:
    """LaViD's block format (e.g. questions/oxfordpets/chat_50-5.txt) as class-level questions.

    Its questions name the class as "the class"; that phrase becomes "the <object>". A question without it keeps
    its text, and the default template names the class.
    """
    questions: list[ClassQuestion] = []
    text_now: str | None = None
    options: list[str] = []
    for number, line in enumerate([*text.splitlines(), ""], start=1):
        option = _LAVID_OPTION.match(line)
        if option:
            if text_now is None:
                raise ArtifactError(f"{source}:{number}: an option before any question")
            options.append(option.group(1))
        elif line.strip():
            if text_now is not None:
                raise ArtifactError(f"{source}:{number}: a question line where an option or a blank line was expected")
            text_now = lavid_placeholder(line.strip())
        elif text_now is not None:
            line_text = OPTION_SEPARATOR.join([text_now, *options])
            questions.extend(parse_class_questions(line_text, f"{source} (question ending at line {number})"))
            text_now, options = None, []
    if not questions:
        raise ArtifactError(f"{source}: holds no questions")
    return questions


def parse_class_questions_text(text: str, source: str) -> list[ClassQuestion]:
    """A class-level questions file's text in either form: LaViD's blocks or one question per line."""
    if is_lavid_block_text(text):
        return parse_lavid_questions(text.removeprefix(BYTE_ORDER_MARK), source)
    return parse_class_questions(text, source)


def read_class_questions(path: str | os.PathLike) -> list[ClassQuestion]:
    path = Path(path)
    return parse_class_questions_text(read_questions_text(path, "--questions")[0], str(path))


def write_class_questions(path: str | os.PathLike, lines: Sequence[str], meta: Mapping[str, Any] | None = None) -> None:
    """Validate and atomically write a class-level questions file (and its sidecar when `meta` is given)."""
    write_questions(path, lines, meta, parse=parse_class_questions)
