"""The contract of a target source: one file of teacher targets, read, validated and joined to images once.

A source is opened with `open_source(path, key=..., class_names=...)` (makd.formats.target_sources): the file's
bytes are read once (they give its sha256), its sidecar at most once, and the kind (per image, per class,
multiple choice) is recognised from the file's keys and value shape. Then:
- `num_aspects`: the targets per image it gives (Q; multiple choice: sum of the options, M_1 + .. + M_Q);
- `check_questions(path)`: the questions file it answers (count, and the sidecar's sha256 or list);
- `join(index, missing, role)`: (kept index, rows [N, num_aspects] float32), NaN = no target for that image; the
  index is any `ImageRows` (makd.data.image_index.ImageIndex is one);
- `describe()`: what summary.json records (kind, path, sha256, sidecar, ...).
A new kind of target file is one more subclass registered in SOURCE_KINDS, not one more branch in build_data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from makd.errors import ConfigError
from makd.formats.aspect_files import AspectTable, parse_aspect_text, read_aspect_text
from makd.formats.errors import ArtifactError
from makd.formats.files import read_sidecar, read_text_sha256, sha256_text, sidecar_path
from makd.formats.question_numbers import AspectColumns
from makd.formats.questions import parse_questions_text, questions_text, read_questions_text
from makd.formats.tolerant_reader import RawAspectFile, parse_raw, refuse_pickle
from makd.registry import Registry


class ImageRows(Protocol):
    """The images a source joins its rows to: one split, in order (makd.data.image_index.ImageIndex is one).

    `ids[i]` is the image id of row i and `labels[i]` its class (named `class_names[label]`); `root` or `source`
    says where the images come from, for messages.
    """

    ids: list[str]
    labels: list[int]
    class_names: list[str]
    source: str
    root: str

    def __len__(self) -> int: ...

    def subset(self, positions: Sequence[int]) -> ImageRows:
        """The rows at `positions`, in that order."""


@dataclass
class TargetFile:
    """One target file read once: its text and the sha256 of its bytes; parsed (strictly or tolerantly) on demand.

    `strict` = read as this project's per-image file (makd.formats.aspect_files' messages, duplicate ids refused), the
    format of DATASET.ASPECT_JSON. Class-level files from elsewhere (LaViD's) are read tolerantly (BOM, JSON lines).
    """

    path: str
    text: str
    sha256: str
    strict: bool
    _parsed: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, path: str | os.PathLike, strict: bool) -> TargetFile:
        if strict:
            text, digest = read_aspect_text(path)
        else:
            if Path(path).is_file():
                refuse_pickle(path)
            text, digest = read_text_sha256(path, "aspect file", encoding="utf-8-sig")
        return cls(str(Path(path)), text, digest, strict)  # the spelling read_aspect_file gave messages

    def table(self) -> AspectTable:
        """The strict per-image parse (cached; its ArtifactError is raised again on every call)."""
        if "table" not in self._parsed:
            try:
                self._parsed["table"] = parse_aspect_text(self.text, self.path, self.sha256)
            except ArtifactError as err:
                self._parsed["table"] = err
        found = self._parsed["table"]
        if isinstance(found, Exception):
            raise found
        return found

    def raw(self) -> RawAspectFile:
        """The tolerant parse (every (key, value) pair in file order, problems listed), cached."""
        if "raw" not in self._parsed:
            self._parsed["raw"] = parse_raw(self.path, self.text, self.sha256)
        return self._parsed["raw"]

    def parses_strictly(self) -> bool:
        try:
            self.table()
        except ArtifactError:
            return False
        return True

    @cached_property
    def sidecar(self) -> dict | None:
        """`<file>.meta.json`, read on first use (a broken sidecar fails only where it is needed)."""
        return read_sidecar(self.path)


def recorded_questions_sha256(meta: dict | None) -> str:
    """The questions sha256 a sidecar records ("questions_sha256", or "questions": {"sha256"})."""
    if not meta:
        return ""
    nested = meta.get("questions")
    if isinstance(nested, dict) and nested.get("sha256"):
        return str(nested["sha256"])
    return str(meta.get("questions_sha256") or "")


def recorded_questions(meta: dict | None) -> list[str] | None:
    """The question lines a sidecar lists (stage 2 at image and at class level writes them), or None."""
    listed = meta.get("questions") if isinstance(meta, dict) else None
    return [str(q).strip() for q in listed] if isinstance(listed, list) else None


class TargetSource:
    """One opened target file (see the module docstring); subclasses register in SOURCE_KINDS."""

    kind: ClassVar[str] = ""
    row_unit: ClassVar[str] = "image"  # what a row of the file is about, for messages ("aspects per image")
    # Kinds are asked in increasing order (the most specific first); the last of a caller's list is its fallback.
    recognition_order: ClassVar[int] = 0

    def __init__(self, file: TargetFile, key: str) -> None:
        self.file = file
        self.key = key  # the config key that named the file, for messages ("DATASET.ASPECT_JSON")

    # ---------------------------------------------------------------- recognition
    @classmethod
    def recognises(cls, file: TargetFile, class_names: list[str], class_map: dict[str, str] | None) -> bool:
        """Whether `file` is of this kind; asked of every kind but the caller's last (its fallback)."""
        raise NotImplementedError

    @classmethod
    def open(
        cls, file: TargetFile, key: str, class_map: dict[str, str] | None = None, class_map_key: str = ""
    ) -> TargetSource:
        raise NotImplementedError

    # ---------------------------------------------------------------- what every kind answers
    @property
    def path(self) -> str:
        return self.file.path

    @property
    def sha256(self) -> str:
        return self.file.sha256

    @property
    def num_aspects(self) -> int:
        raise NotImplementedError

    @property
    def num_questions(self) -> int:
        """Lines of the questions file this source answers (= num_aspects for yes/no questions)."""
        return self.num_aspects

    def join(self, index: ImageRows, missing: str = "error", role: str = "training") -> tuple[ImageRows, np.ndarray]:
        raise NotImplementedError

    def read_questions_file(self, questions_path: str) -> tuple[list[str], str]:
        """(normalised question lines, sha256 of the file's bytes) of the questions file this kind answers."""
        path = Path(questions_path)
        text, raw_sha256 = read_questions_text(path)
        return parse_questions_text(text, str(path)), raw_sha256

    def check_questions(self, questions_path: str, key: str = "DATASET.QUESTIONS") -> list[str]:
        """The questions file holds num_questions questions and, when the sidecar says which file it was, is that
        file; returns its question lines."""
        questions, raw_sha256 = self.read_questions_file(questions_path)
        if len(questions) != self.num_questions:
            raise ConfigError(
                f"{key} {questions_path} holds {len(questions)} questions but {self.path} has "
                f"{self.num_questions} {self.question_unit()}; point {key} at the file stage 2 answered"
            )
        meta = self.file.sidecar
        recorded = recorded_questions_sha256(meta)
        normalised = sha256_text(questions_text(questions))
        if recorded and recorded not in (raw_sha256, normalised):  # raw bytes or normalised lines
            raise ConfigError(
                f"{key} {questions_path} (sha256 {normalised[:12]}) is not the questions file {self.path} "
                f"was made from (its sidecar {sidecar_path(self.path).name} records sha256 {recorded[:12]}); point "
                f"{key} at that file, or re-run stage 2 with the edited questions"
            )
        listed = recorded_questions(meta)
        if not recorded and listed is not None and listed != questions:
            raise ConfigError(
                f"{key} {questions_path} differs from the questions listed in {sidecar_path(self.path)}; "
                f"point {key} at the file stage 2 answered, or re-run stage 2 with the edited questions"
            )
        return questions

    def question_unit(self) -> str:
        return f"aspects per {self.row_unit}"

    def questions(self) -> list[str] | None:
        """The question lines the sidecar lists (one per question, in column order), or None."""
        return recorded_questions(self.file.sidecar)

    def columns_of_questions(self, numbers: list[int]) -> list[int]:
        """0-based target columns of 0-based question numbers (one column per yes/no question)."""
        return list(numbers)

    def aspect_columns(self) -> AspectColumns:
        """Which question (and option) each target column answers, numbered as the questions file this source
        answers (makd.formats.question_numbers); columns come question by question, in order."""
        questions: list[int] = []
        options: list[int | None] = []
        for q in range(self.num_questions):
            width = len(self.columns_of_questions([q]))
            questions += [q] * width
            options += [None] if width == 1 else list(range(width))
        return AspectColumns(tuple(questions), tuple(options), self.num_questions)

    def describe(self) -> dict[str, Any]:
        """What summary.json records about the source."""
        meta = sidecar_path(self.path)
        return {
            "kind": self.kind,
            "key": self.key,
            "path": self.path,
            "sha256": self.sha256,
            "sidecar": str(meta) if meta.exists() else None,
            "num_aspects": self.num_aspects,
        }


SOURCE_KINDS: Registry[type[TargetSource]] = Registry("target source kind")
