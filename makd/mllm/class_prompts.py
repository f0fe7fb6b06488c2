"""Questions about a class name (LaViD-style class-level teachers): the file format and the text asked.

A class-level questions file is UTF-8 text, one question per line, like a stage-1 questions file. A yes/no
line is the question alone; a multiple-choice line is the question and its M options separated by " | ":
    What is the main colour of the <object>'s coat? | Black | White | Brown | Grey | Mixed
`<object>` is replaced by the class name. A question without it is put into a template that names the class
("Consider a photo of a {class}. {question}"); several templates are paraphrases whose answers are averaged.
Options are shown as lettered lines (A. .., B. ..) and the answer is read from the letter tokens.
LaViD's own question files (a question line, numbered options, blank lines between) are read too.
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
from makd.formats.files import read_utf8_text
from makd.formats.questions import write_questions
from makd.mllm.chat_template import with_answer_suffix

PLACEHOLDER = "<object>"
OPTION_SEPARATOR = " | "
DEFAULT_TEMPLATE = "Consider a photo of a {class}. {question}"
PLACEHOLDER_TEMPLATE = "{question}"  # the default when the question names the class itself
OPTION_LETTERS = string.ascii_uppercase
# How options are labelled and which tokens are read: letters (makd's default) or digits (LaViD's choice, <= 9).
OPTION_LABELS = {"letters": OPTION_LETTERS, "digits": "123456789"}
CHOICE_INSTRUCTION = "Answer with the {kind} of the correct option only."


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
    """The questions of a class-level questions file; all yes/no or all multiple-choice (M may differ)."""
    questions: list[ClassQuestion] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            raise ArtifactError(f"{source}:{number}: blank line; write one question per line, no blank lines")
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


def read_class_questions(path: str | os.PathLike) -> list[ClassQuestion]:
    path = Path(path)
    text = read_utf8_text(path, "--questions", encoding="utf-8-sig")
    if is_lavid_block_text(text):
        return parse_lavid_questions(text, str(path))
    return parse_class_questions(text, str(path))


def write_class_questions(path: str | os.PathLike, lines: Sequence[str], meta: Mapping[str, Any] | None = None) -> None:
    """Validate and atomically write a class-level questions file (and its sidecar when `meta` is given)."""
    write_questions(path, lines, meta, parse=parse_class_questions)


def check_templates(templates: Sequence[str], questions: Sequence[ClassQuestion]) -> None:
    """Each template holds {question}; one without {class} would never name the class of a question lacking <object>."""
    for template in templates:
        if "{question}" not in template:
            raise ArtifactError(f"--class-template {template!r} has no {{question}}; e.g. {DEFAULT_TEMPLATE!r}")
        if "{class}" not in template:
            unnamed = [q.text for q in questions if PLACEHOLDER not in q.text]
            if unnamed:
                raise ArtifactError(
                    f"--class-template {template!r} has no {{class}} and the question {unnamed[0]!r} has no "
                    f"{PLACEHOLDER}: the class would never be named; add {{class}} to the template"
                )


def default_templates(questions: Sequence[ClassQuestion]) -> list[str]:
    """ "{question}" when every question holds `<object>`, else the template that names the class."""
    return [PLACEHOLDER_TEMPLATE if all(PLACEHOLDER in q.text for q in questions) else DEFAULT_TEMPLATE]


def option_labels(question: ClassQuestion, labels: str = "letters") -> str:
    """The labels of `question`'s options ("ABC.." or "123.."); more options than labels is an error."""
    if labels not in OPTION_LABELS:
        raise ArtifactError(f"--option-labels {labels!r}: use one of {', '.join(OPTION_LABELS)}")
    if len(question.options) > len(OPTION_LABELS[labels]):
        raise ArtifactError(
            f"{question.text[:60]!r} has {len(question.options)} options; {labels} label at most "
            f"{len(OPTION_LABELS[labels])} (use --option-labels letters)"
        )
    return OPTION_LABELS[labels][: len(question.options)]


def class_query(
    question: ClassQuestion, class_name: str, template: str, answer_suffix: str = "", labels: str = "letters"
) -> str:
    """The user message asking `question` about `class_name`.

    `<object>` is replaced by the class name; a template without {class} puts the question in as it is.
    Yes/no: the answer suffix is appended as at image level. Multiple choice: labelled options, then the
    instruction, so that the first answer token is an option label.
    """
    filled = question.text.replace(PLACEHOLDER, class_name)
    text = template.replace("{class}", class_name).replace("{question}", filled)
    if not question.is_multiple_choice:
        return with_answer_suffix(text, answer_suffix)
    lines = [f"{label}. {option}" for label, option in zip(option_labels(question, labels), question.options)]
    kind = "letter" if labels == "letters" else "number"
    return "\n".join([text, *lines, CHOICE_INSTRUCTION.format(kind=kind)])


def answer_words(
    question: ClassQuestion, yes_word: str = "Yes", no_word: str = "No", labels: str = "letters"
) -> tuple[str, ...]:
    """The answer tokens read for `question`: (yes, no), or its option labels in order."""
    if question.is_multiple_choice:
        return tuple(option_labels(question, labels))
    return (yes_word, no_word)
