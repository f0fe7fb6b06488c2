"""Targets assembled by question from several target files (DATASET.ASPECT_SOURCES), concatenated in order.

Each entry is "PATH" (all of the file's questions) or "PATH:QUESTIONS", QUESTIONS being 1-based question
numbers of that file (its questions in order, blank lines not counted) and ranges: "1-10", "3,5,7-9". A
multiple-choice question brings all its option columns. So per-image MLLM targets for some questions and class-level LLM
targets for others are two entries: ["internvl.json:1-30", "qwen_class.json:31-50"], or two files made from
two questions files: ["internvl.json", "qwen_class.json"].

Checks, each one line naming the entry: the file exists and is one kind (makd.formats.target_sources); a question
number is within the file's questions and not repeated; no question is taken twice (the same file and number
twice, or the same question text in two files' sidecars); per-image parts need a row for every training image
(DATASET.MISSING_ASPECTS applies to them; with "drop" an image without a row in any part is left out), and
per-class parts a row for every class.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from makd.errors import ConfigError
from makd.formats.question_numbers import parse_ranges
from makd.formats.questions import normalize_text, read_questions
from makd.formats.target_sources.base import ImageRows, TargetSource

_WITH_QUESTIONS = re.compile(r"(?P<path>.+):(?P<numbers>\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)")
KEY = "DATASET.ASPECT_SOURCES"


def parse_entry(entry: str) -> tuple[str, list[int] | None]:
    """(path, 0-based question positions or None = all) of an entry "PATH" or "PATH:1-10,12" (numbers 1-based).

    Only a suffix of numbers and ranges is read as questions, so "C:\\\\data\\\\x.json" stays a path.
    """
    entry = entry.strip()
    match = _WITH_QUESTIONS.fullmatch(entry)
    if not match:
        return entry, None
    return match["path"], parse_ranges(match["numbers"], f"{KEY} entry {entry!r}")


@dataclass
class Part:
    """One entry: its source, the 0-based questions taken and their 0-based columns in the source's rows."""

    entry: str
    source: TargetSource
    questions: list[int]
    columns: list[int]
    offset: int  # first column of this part in the assembled targets


class MixedSource(TargetSource):
    """The parts' targets side by side: row of an image = part 1's selected columns, then part 2's, ..."""

    kind = "mixed"

    def __init__(self, parts: list[Part]) -> None:
        super().__init__(None, KEY)  # type: ignore[arg-type]  (no file of its own)
        self.parts = parts

    @classmethod
    def open_entries(cls, entries: list[str], open_one) -> MixedSource:
        """`open_one(path) -> TargetSource` opens each entry's file (once per distinct path)."""
        if not entries:
            raise ConfigError(f"{KEY} is empty; list the target files, e.g. ['per_image.json:1-5', 'per_class.json']")
        opened: dict[str, TargetSource] = {}
        taken: dict[tuple[str, int], str] = {}  # (real path, question) -> entry
        texts: dict[str, str] = {}  # normalised question text -> entry
        parts, offset = [], 0
        for entry in entries:
            path, numbers = parse_entry(str(entry))
            real = os.path.realpath(path)
            if real not in opened:
                opened[real] = open_one(path)
            source = opened[real]
            if numbers is None:
                numbers = list(range(source.num_questions))
            past = [n + 1 for n in numbers if n >= source.num_questions]
            if past:
                raise ConfigError(
                    f"{KEY} entry {entry!r}: question {past[0]} is past the {source.num_questions} questions of "
                    f"{source.path}; number the file's questions 1..{source.num_questions}"
                )
            for n in numbers:
                if (real, n) in taken:
                    raise ConfigError(
                        f"{KEY}: question {n + 1} of {source.path} is taken by {taken[(real, n)]!r} and {entry!r}; "
                        "take each question from one entry"
                    )
                taken[(real, n)] = entry
            listed = source.questions()
            if listed is not None and len(listed) == source.num_questions:
                for n in numbers:
                    text = normalize_text(listed[n].split("|")[0])
                    if text in texts and texts[text] != entry:
                        raise ConfigError(
                            f"{KEY}: the question {listed[n]!r} is answered by {texts[text]!r} and by {entry!r} "
                            "(their sidecars list it); take it from one of them"
                        )
                    texts[text] = entry
            columns = source.columns_of_questions(numbers)
            parts.append(Part(entry, source, numbers, columns, offset))
            offset += len(columns)
        return cls(parts)

    @property
    def path(self) -> str:
        return " + ".join(p.entry for p in self.parts)

    @property
    def sha256(self) -> str:
        """A fingerprint of the assembly: each entry with its file's sha256, in order."""
        text = json.dumps([[p.entry, p.source.sha256] for p in self.parts])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def num_aspects(self) -> int:
        return sum(len(p.columns) for p in self.parts)

    @property
    def num_questions(self) -> int:
        return sum(len(p.questions) for p in self.parts)

    def columns_of_questions(self, numbers: list[int]) -> list[int]:
        """Assembled columns of assembled questions (numbered in entry order, as the run's questions file lists
        them); a multiple-choice question brings all its option columns."""
        spans: list[list[int]] = []
        for part in self.parts:
            column = part.offset
            for n in part.questions:
                width = len(part.source.columns_of_questions([n]))
                spans.append(list(range(column, column + width)))
                column += width
        return [c for q in numbers for c in spans[q]]

    def questions(self) -> list[str] | None:
        listed = [p.source.questions() for p in self.parts]
        if any(q is None for q in listed):
            return None
        return [q[n] for q, p in zip(listed, self.parts) for n in p.questions]

    def join(self, index: ImageRows, missing: str = "error", role: str = "training") -> tuple[ImageRows, np.ndarray]:
        """Each part's rows (its selected columns) side by side; with "drop", images some part has no row for leave."""
        blocks = []
        for part in self.parts:
            kept, rows = part.source.join(index, "nan" if missing == "drop" else missing, role)
            blocks.append(rows[:, part.columns])
        targets = np.concatenate(blocks, axis=1)  # [N, Q]
        if missing == "drop":
            keep = np.flatnonzero(np.isfinite(targets).all(axis=1))
            if len(keep) < len(index):
                index, targets = index.subset(keep.tolist()), targets[keep]
        return index, targets

    def check_questions(self, questions_path: str, key: str = "DATASET.QUESTIONS") -> list[str]:
        """The run's questions file lists every part's questions in entry order (as their sidecars list them)."""
        multiple = [p.entry for p in self.parts if p.source.kind == "multiple_choice"]
        if multiple:
            raise ConfigError(
                f"{key} is a yes/no questions file but {KEY} entry {multiple[0]!r} is multiple choice; "
                f"leave {key} empty (each file's sidecar records its questions)"
            )
        questions = read_questions(questions_path)
        if len(questions) != self.num_questions:
            raise ConfigError(
                f"{key} {questions_path} holds {len(questions)} questions but {KEY} takes {self.num_questions} "
                f"({', '.join(f'{len(p.questions)} from {p.entry}' for p in self.parts)}); list them in that order"
            )
        line = 0
        for part in self.parts:
            listed = part.source.questions()
            for n in part.questions:
                line += 1
                if listed is not None and len(listed) == part.source.num_questions and listed[n] != questions[line - 1]:
                    raise ConfigError(
                        f"{key} {questions_path}:{line}: {questions[line - 1]!r} is not question {n + 1} of "
                        f"{part.source.path} ({listed[n]!r}, its sidecar); list the entries' questions in order"
                    )
        return questions

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": KEY,
            "num_aspects": self.num_aspects,
            "sha256": self.sha256,
            "sources": [
                {
                    **p.source.describe(),
                    "entry": p.entry,
                    "questions": [n + 1 for n in p.questions],
                    "target_columns": [p.offset, p.offset + len(p.columns)],
                }
                for p in self.parts
            ],
        }
