"""Screening a questions file that no LLM wrote: `make_questions.py --check FILE --classes CLASSES`.

Every line goes through stage 1's own screening (makd.llm.screening: one yes/no sentence, no class name where it
names the object, no near duplicate of an earlier line), with the line numbers kept, and the result is written
to the file's sidecar as its screening record (makd.formats.screening_record), which stage 2 reads. Blank lines
and answer instructions after a question ("Is it red? Answer yes or no.") are problems here, not repairs: the
file is the user's, and stage 2 reads it as written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from makd.atomic_files import atomic_write_json
from makd.formats.files import BYTE_ORDER_MARK, read_sidecar, read_utf8_text, sidecar_path, utc_now
from makd.formats.questions import questions_sha256
from makd.formats.screening_record import SCREENING_KEY, screening_record
from makd.llm.screening import screen_questions, split_answer_suffix


@dataclass
class QuestionsCheck:
    """The non-blank lines of a file (stripped) and a {"line", "number", "question", "reason"} per line that failed:
    "line" is the file's line, "number" the question's number (counted from 1 over the non-blank lines, as stage 2
    and the trainer count them; None for a blank line)."""

    questions: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and bool(self.questions)


def screen_questions_file(
    path: str | os.PathLike,
    class_names: Sequence[str],
    *,
    allow_class_names: bool = False,
    allowed_names: Iterable[str] = (),
    leak_rule: str = "names_object",
) -> QuestionsCheck:
    """Screen every line of the questions file at `path` (1-based line numbers in the problems)."""
    text = read_utf8_text(path, "questions file")
    if text.startswith(BYTE_ORDER_MARK):
        text = text[len(BYTE_ORDER_MARK) :]
    allowed_names = list(allowed_names)
    result, kept = QuestionsCheck(), []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    for number, raw in enumerate(lines, start=1):
        line = " ".join(raw.split())
        if not line:
            result.problems.append({"line": number, "number": None, "question": raw, "reason": "blank line"})
            continue
        result.questions.append(line)
        question_number = len(result.questions)
        question, suffix = split_answer_suffix(line)
        if suffix:
            result.problems.append({"line": number, "number": question_number, "question": line, "reason": (
                f"ends with an answer instruction ({suffix!r}): remove it from the file and give it to stage 2 as "
                "--answer-suffix")})  # fmt: skip
            continue
        screening = screen_questions([question], class_names, allow_class_names, kept,
                                     allowed_names=allowed_names, leak_rule=leak_rule)  # fmt: skip
        if screening.rejected:
            result.problems.append(
                {"line": number, "number": question_number, "question": line, "reason": screening.rejected[0][1]}
            )
        else:
            kept.append(question)
    return result


def write_screening_record(
    path: str | os.PathLike,
    check: QuestionsCheck,
    *,
    classes: str,
    num_classes: int,
    class_name_rule: str,
    allowed_class_names: Sequence[str] = (),
) -> Path:
    """Record the check in the file's sidecar (created for a hand-written file; an existing one keeps every other
    key, its "screening" replaced). Returns the sidecar's path."""
    sidecar = sidecar_path(path)
    meta = read_sidecar(path)
    record = screening_record(check.questions, check.problems, classes=classes, num_classes=num_classes,
                              class_name_rule=class_name_rule, allowed_class_names=allowed_class_names)  # fmt: skip
    if meta is None:
        meta = {
            "num_questions": len(check.questions),
            "sha256": questions_sha256(check.questions),
            "date": utc_now(),
            "written_by": "by hand (screened with make_questions.py --check)",
        }
    atomic_write_json(sidecar, {**meta, SCREENING_KEY: record})
    return Path(sidecar)
