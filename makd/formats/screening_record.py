"""The screening record of a questions file: which check its text passed, when, against which classes.

Stage 1 screens every question it keeps (makd.llm.screening: one yes/no sentence, no class name, no near
duplicate); a hand-written file gets the same screening from `make_questions.py --check FILE --classes CLASSES`,
which writes the record under "screening" in the file's sidecar (`<file>.meta.json`, other keys kept). Stage 2
reads it back with `screening_warning` and warns when the file it is about to pay for was never screened,
changed since, or failed: a question that names the class leaks the label into every target.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from makd.formats.files import read_sidecar, utc_now
from makd.formats.questions import questions_sha256, read_questions

SCREENING_KEY = "screening"
GENERATED_BY = "makd make_questions"  # the sidecar of a generated file: screened while it was made
CHECK_COMMAND = "python tools/make_questions.py --check"


def screening_record(
    questions: Sequence[str],
    problems: Sequence[dict[str, Any]],
    *,
    classes: str,
    num_classes: int,
    class_name_rule: str,
    allowed_class_names: Sequence[str] = (),
) -> dict[str, Any]:
    """The "screening" entry of a sidecar: `problems` are {"line", "number", "question", "reason"} of failed lines;
    `questions` the lines read (their sha256 ties the record to this text)."""
    return {
        "by": "make_questions.py --check",
        "date": utc_now(),
        "passed": not problems,
        "sha256": questions_sha256(questions),
        "num_questions": len(questions),
        "classes": classes,
        "num_classes": num_classes,
        "class_name_rule": class_name_rule,
        "allowed_class_names": list(allowed_class_names),
        "problems": list(problems),
    }


def screening_warning(path: str | os.PathLike) -> str:
    """"" when the questions file at `path` passed a screening of its current text, else one line saying why not
    and the command that screens it (the file itself must be readable: stage 2 has read it already)."""
    path = Path(path)
    meta = read_sidecar(path) or {}
    current = questions_sha256(read_questions(path))
    check = f"{CHECK_COMMAND} {path} --classes CLASSES"
    record = meta.get(SCREENING_KEY)
    if isinstance(record, dict):
        if record.get("sha256") != current:
            return f"{path} changed since it was screened ({record.get('date', '?')}); screen it again: {check}"
        if not record.get("passed"):
            problems = record.get("problems") or [{}]
            first = problems[0]
            return (f"{path} failed its screening ({len(problems)} question(s), first: line {first.get('line', '?')}, "
                    f"{first.get('reason', '?')}); fix them and screen it again: {check}")  # fmt: skip
        return ""
    if str(meta.get("written_by", "")).startswith(GENERATED_BY) and meta.get("sha256") == current:
        return ""  # stage 1 screened every question it kept, and the text is still the one it wrote
    return (f"{path} was never screened (class-name leaks, near duplicates, questions that are not yes/no): "
            f"{check}")  # fmt: skip
