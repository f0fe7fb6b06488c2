"""Multiple-choice per-class files: `{class name: [[p_q1..p_qM], ...]}` (LaViD's `*_chat_50-5.json`, stage 2
`--level class` with option lines).

A per-class file whose values are Q blocks of M_q option probabilities (M may differ between questions),
flattened row-major to K = M_1 + .. + M_Q targets: question 1's options, then question 2's. Its questions
file is a class-level one (`question | option | option ...` lines, or LaViD's blocks; makd.formats.class_questions)
with Q lines, and each question's option count must be the file's.
"""

from __future__ import annotations

from typing import Any

from makd.formats.target_sources.base import SOURCE_KINDS
from makd.formats.target_sources.per_class import PerClassSource, keys_and_shape, names_classes


@SOURCE_KINDS.register("multiple_choice")
class MultipleChoiceSource(PerClassSource):
    kind = "multiple_choice"
    recognition_order = 10  # before per_class, whose yes/no rows are a special case of its blocks

    @classmethod
    def recognises(cls, file, class_names, class_map) -> bool:
        found = keys_and_shape(file)
        if found is None or isinstance(found[1], str) or len(found[1]) == 1:
            return False
        return names_classes(found[0], class_names, class_map) or not file.strict

    def question_unit(self) -> str:
        return "multiple-choice questions per class"

    def columns_of_questions(self, numbers: list[int]) -> list[int]:
        """Each question's M_q option columns, in order."""
        starts, total = [], 0
        for m in self.shape[1:]:
            starts.append(total)
            total += m
        return [starts[q] + k for q in numbers for k in range(self.shape[1 + q])]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "columns": "row-major: question 1's options, then question 2's, ..."}
