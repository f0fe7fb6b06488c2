"""Per-class target files: `{class name: [p_1..p_Q]}` (stage 2 `--level class`, LaViD's `*_text.json`).

Keys are matched to the dataset's class names by the one rule of makd.formats.conversion (class_key: case
folded, `_` as space, a leading `NNN.` and a final "s" ignored; a class map pairs the rest); every image gets
its class's row. A dataset class without a row is a one-line error naming it, whatever MISSING_ASPECTS says:
a missing class is a wrong file, never a few images stage 2 could not read. Recognised in DATASET.ASPECT_JSON
when its keys name the dataset's classes: every class has a key, or every key names a class.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from makd.atomic_files import atomic_write_json
from makd.errors import ConfigError
from makd.formats.aspect_files import AspectTable
from makd.formats.class_questions import parse_class_questions_text
from makd.formats.conversion import (
    check_values,
    class_key,
    keys_name_classes,
    match_classes,
    merge_duplicates,
    missing_classes_text,
)
from makd.formats.errors import ArtifactError, line_pair
from makd.formats.files import sidecar_path
from makd.formats.questions import read_questions_text
from makd.formats.strict_json import locate_duplicate_key
from makd.formats.target_sources.base import SOURCE_KINDS, ImageRows, TargetFile, TargetSource
from makd.formats.tolerant_reader import RawAspectFile, flatten_values, value_shape


def names_classes(keys: list[str], class_names: list[str], class_map: dict[str, str] | None) -> bool:
    """Whether a file with these keys is about the dataset's classes (makd.formats.conversion.keys_name_classes, the
    rule `aspects convert --level auto` uses too)."""
    return keys_name_classes(keys, class_names, class_map)


def _refuse_repeated_classes(raw: RawAspectFile, text: str, key: str) -> None:
    """A class with two rows in a file a run trains on is one ArtifactError line naming both lines: JSON would keep
    one of them without a word, and which one the author meant is not ours to guess (`aspects convert
    --on-duplicate` chooses explicitly)."""
    seen: set[str] = set()
    for name, _ in raw.pairs:
        if name in seen:
            found = locate_duplicate_key(text) if raw.format == "json" else None
            if found is not None and found[1] == name:
                lines = line_pair(found[2])
            else:  # JSON lines: one object a line
                spellings = {json.dumps(name), json.dumps(name, ensure_ascii=False)}
                numbers = [n for n, line in enumerate(text.splitlines(), 1) if any(s in line for s in spellings)]
                lines = f"lines {', '.join(map(str, numbers))}" if numbers else "two rows"
            raise ArtifactError(
                f"{key} {raw.path}: class {name!r} has more than one row ({lines}); JSON would keep only one of them: "
                "keep one row per class (or choose with `tools/aspects.py convert --on-duplicate first|last`)"
            )
        seen.add(name)


def keys_and_shape(file: TargetFile) -> tuple[list[str], tuple[int, ...] | str] | None:
    """(keys, shape of the first value) of `file` for recognition: from the strict parse when it succeeds (no
    copy of the rows), else from the tolerant one; None when neither reads it."""
    if file.strict and file.parses_strictly():
        table = file.table()
        return table.ids, (table.num_aspects,)
    try:
        pairs = file.raw().pairs
    except ArtifactError:
        return None
    return ([k for k, _ in pairs], value_shape(pairs[0][1])) if pairs else None


@SOURCE_KINDS.register("per_class")
class PerClassSource(TargetSource):
    """Rows keyed by class names; values [p_1..p_Q] (or multiple-choice blocks, see MultipleChoiceSource)."""

    kind = "per_class"
    row_unit = "class"
    recognition_order = 20

    def __init__(
        self,
        file: TargetFile,
        key: str,
        rows: dict[str, Any],
        shape: tuple[int, ...],
        class_map: dict[str, str] | None = None,
        class_map_key: str = "",
    ) -> None:
        super().__init__(file, key)
        self.rows = rows  # {file class: value}, one per key
        self.shape = shape  # (Q,) or (Q, M_1, .., M_Q)
        self.class_map = class_map
        self.class_map_key = class_map_key
        self.info: dict[str, Any] = {}  # filled by class_table: which file classes the dataset used

    @classmethod
    def recognises(cls, file, class_names, class_map) -> bool:
        found = keys_and_shape(file)
        if found is None or isinstance(found[1], str) or len(found[1]) != 1:
            return False
        return names_classes(found[0], class_names, class_map)

    @classmethod
    def open(cls, file, key, class_map=None, class_map_key=""):
        if file.strict and file.parses_strictly():  # already validated: one value per key, all in [0, 1]
            table: AspectTable = file.table()
            rows = dict(zip(table.ids, table.values.tolist()))
            return cls(file, key, rows, (table.num_aspects,), class_map, class_map_key)
        raw: RawAspectFile = file.raw()
        _refuse_repeated_classes(raw, file.text, key)
        merged, _ = merge_duplicates(raw)
        if not merged:
            raise ArtifactError(f"{key} {file.path}: holds no rows")
        return cls(file, key, merged, check_values(raw, merged), class_map, class_map_key)

    @property
    def num_aspects(self) -> int:
        return sum(self.shape[1:]) if len(self.shape) > 1 else self.shape[0]

    @property
    def num_questions(self) -> int:
        return self.shape[0]

    def read_questions_file(self, questions_path: str) -> tuple[list[str], str]:
        """A class-level questions file (yes/no lines, `question | options` lines or LaViD's blocks)."""
        path = Path(questions_path)
        text, raw_sha256 = read_questions_text(path)
        questions = parse_class_questions_text(text, str(path))
        options = [len(q.options) or 1 for q in questions]  # a yes/no question: one value
        expected = list(self.shape[1:]) or [1] * self.shape[0]
        if len(questions) == self.num_questions and options != expected:
            first = next(q for q, (a, b) in enumerate(zip(options, expected)) if a != b)
            raise ConfigError(
                f"{questions_path}: question {first + 1} has {len(questions[first].options)} options but {self.path} "
                f"gives {expected[first]} value(s) for it; point at the questions file stage 2 answered"
            )
        # The class-level sidecar records the sha256 of these normalised lines (makd.mllm.class_level); the base
        # check compares it with both the bytes' and the lines' sha256.
        return [q.line() for q in questions], raw_sha256

    def class_table(self, class_names: list[str]) -> np.ndarray:
        """Rows float32 [C, K] with row c = the file's row of dataset class `class_names[c]`, flattened row-major.

        A dataset class without a row is a one-line ArtifactError naming it; file rows no class uses are in `info`.
        """
        pair_key = self.class_map_key or "a class map"
        pairs, missing = match_classes(class_names, list(self.rows), self.class_map, pair_key)
        if missing:
            # Never the MISSING_ASPECTS advice: a class without a row is a naming mismatch or a file of another
            # dataset, and dropping its images would silently train without that class's targets.
            raise ArtifactError(
                f"{self.key} {self.path}: {len(missing)} class(es) of the dataset have no row: "
                f"{missing_classes_text(missing, list(self.rows), pairs)} (names are compared case-folded, '_' as "
                f"space, a final 's' ignored); pair each with its row in {pair_key} (a JSON object {{dataset class: "
                "file class} or lines `dataset class<TAB>file class`), or add the rows"
            )
        table = np.asarray([flatten_values(self.rows[pairs[name]]) for name in class_names], dtype=np.float32)
        self.info = {
            "questions": self.shape[0],
            "options_per_question": list(self.shape[1:]) or None,
            "targets_per_class": int(table.shape[1]),
            "classes": {name: pairs[name] for name in class_names if class_key(name) != class_key(pairs[name])},
            "unused_file_classes": sorted(set(self.rows) - set(pairs.values())),
        }
        return table

    def join(self, index: ImageRows, missing: str = "error", role: str = "training") -> tuple[ImageRows, np.ndarray]:
        """Every image of `index` gets its class's row (`missing` does not apply: a class without a row is an error)."""
        table = self.class_table(list(index.class_names))
        return index, table[np.asarray(index.labels, dtype=np.int64)]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.info}


def write_class_rows(path: str | os.PathLike, rows: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> None:
    """Write a per-class target file, `{class: [p_1..p_Q]}` or `{class: [[p_q1..p_qM], ...]}` in the order of `rows`,
    then its sidecar when `meta` is given; each atomically (stage 2 --level class, the demo's class teacher)."""
    atomic_write_json(path, rows)
    if meta is not None:
        atomic_write_json(sidecar_path(path), meta)
