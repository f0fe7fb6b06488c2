"""Some of a target source's questions (DATASET.QUESTIONS_USED): the one way to train on a subset of the questions.

`SelectedQuestions(source, positions)` is the source with only the columns of the chosen questions ("1-20": the
first 20, "1,4,7-9": a list; 1-based question numbers of the questions file the source answers). The training
file, the test file (DATASET.TEST_ASPECT_JSON) and the mirrored-view file (DATASET.ASPECT_JSON_FLIP) are each
selected with the same numbers, so the student's head, its targets and the agreement metrics cover the same
questions; the columns keep their question numbers (`aspect_columns`), so question 7 is reported as q7 whatever
else is left out. The questions file (DATASET.QUESTIONS) is still checked whole against the source: the selection
is of the questions the teacher answered, never of another file. It is no kind of file (it registers nothing).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from makd.errors import ConfigError
from makd.formats.question_numbers import AspectColumns, format_ranges, parse_ranges
from makd.formats.target_sources.base import ImageRows, TargetSource

KEY = "DATASET.QUESTIONS_USED"


class SelectedQuestions(TargetSource):
    """The columns of `positions` (0-based questions of `source`, in the order given) of every row of `source`."""

    kind = "selected"

    def __init__(self, source: TargetSource, positions: list[int]) -> None:
        super().__init__(source.file, source.key)
        self.source, self.positions = source, list(positions)
        self.columns = source.columns_of_questions(self.positions)

    @classmethod
    def of(cls, source: TargetSource, numbers: str) -> TargetSource:
        """`source` restricted to the 1-based question ranges `numbers` ("" = every question: `source` itself)."""
        if not numbers.strip():
            return source
        positions = parse_ranges(numbers, KEY)
        past = [p + 1 for p in positions if p >= source.num_questions]
        if past:
            raise ConfigError(
                f"{KEY} {numbers!r}: question {past[0]} is past the {source.num_questions} questions {source.path} "
                f"answers ({source.key}); choose among 1-{source.num_questions}"
            )
        return cls(source, positions)

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def sha256(self) -> str:
        return self.source.sha256  # the file's bytes; the selection is recorded beside it (describe)

    @property
    def num_aspects(self) -> int:
        return len(self.columns)

    @property
    def num_questions(self) -> int:
        return len(self.positions)

    def join(self, index: ImageRows, missing: str = "error", role: str = "training") -> tuple[ImageRows, np.ndarray]:
        kept, rows = self.source.join(index, missing, role)
        return kept, rows[:, self.columns]

    def check_questions(self, questions_path: str, key: str = "DATASET.QUESTIONS") -> list[str]:
        """The whole questions file against the whole source; returns the selected questions' lines."""
        questions = self.source.check_questions(questions_path, key)
        return [questions[p] for p in self.positions]

    def questions(self) -> list[str] | None:
        listed = self.source.questions()
        if listed is None or len(listed) != self.source.num_questions:
            return None
        return [listed[p] for p in self.positions]

    def columns_of_questions(self, numbers: list[int]) -> list[int]:
        """Columns of this selection's questions, `numbers` being 0-based places in the selection."""
        place = {column: i for i, column in enumerate(self.columns)}
        return [place[c] for n in numbers for c in self.source.columns_of_questions([self.positions[n]])]

    def aspect_columns(self) -> AspectColumns:
        return self.source.aspect_columns().select(self.columns)  # numbered as the whole questions file

    def describe(self) -> dict[str, Any]:
        described = self.source.describe()
        return {**described, "questions_used": format_ranges(self.positions), "num_aspects": len(self.columns)}
