"""Question numbers as people read and write them: 1-based, "q1" is the first question of the questions file.

Every number a user reads or writes names a question by its place in the questions file, counting from 1 as an
editor counts lines (blank lines, which the reader ignores, are not counted): `DATASET.QUESTIONS_USED`, the
suffix of a `DATASET.ASPECT_SOURCES` entry, `MaKD.FLIP_SENSITIVE` / `MaKD.FLIP_MIRROR` and the questions sidecar's
`flip_sensitive` / `flip_mirror`, `aspects inspect / audit / compare`, `aspect_metrics.json`, the plots, the
TensorBoard tags, the error messages. Arrays inside makd stay 0-based ("positions"); this module is the one
place that turns one into the other, so no reader or writer does its own `+ 1`.

Two written forms:
- ranges, "1-10,12" (`DATASET.QUESTIONS_USED`, an `ASPECT_SOURCES` suffix): always 1-based, as they always were;
- lists, ["q3", "q7"] or [["q3", "q4"]] (the flip keys and sidecars): "q<N>" says its base in every item.

Migration of the flip lists, which counted from 0 before: bare integers are read by the evidence in their own
source (the config's two flip keys together, or one sidecar's two lists together, since one file was written
under one convention). A 0 among them can only count from 0: accepted, with a warning that shows the "q" form to
write instead. A value equal to the number of questions Q can only count from 1 (it was out of range from 0):
accepted. Neither: refused in one line that gives both readings to choose from. Bare integers mixed with "q"
items, both 0 and Q, or a number outside 1..Q are refused too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from makd.errors import ConfigError

_RANGES = re.compile(r"\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*")
_Q_ITEM = re.compile(r"[qQ](\d+)")
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _option(option: int | None) -> str:
    if option is None:
        return ""
    return OPTION_LETTERS[option] if option < len(OPTION_LETTERS) else f".{option + 1}"


def label(position: int, option: int | None = None) -> str:
    """ "q3" for position 2; "q3B" for option 1 (0-based) of a multiple-choice question."""
    return f"q{position + 1}{_option(option)}"


def tag(position: int, option: int | None = None) -> str:
    """label() with two digits ("q03", "q03B"), for names that sort (TensorBoard tags)."""
    return f"q{position + 1:02d}{_option(option)}"


def is_ranges(text: str) -> bool:
    """Whether `text` is written as question ranges ("3", "1-10", "3,5,7-9")."""
    return _RANGES.fullmatch(text.strip()) is not None


def parse_ranges(text: str, where: str) -> list[int]:
    """0-based positions of 1-based ranges "1-10,12", in the order written; a repeat or a reversed or 0 range is a
    ConfigError naming `where` (the key or entry)."""
    text = text.strip()
    if not is_ranges(text):
        raise ConfigError(
            f"{where}: {text!r} is not question numbers (1-based numbers and ranges, e.g. '1-20' for the first 20 "
            "questions or '1,4,7-9')"
        )
    positions: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if low < 1 or high < low:
            raise ConfigError(
                f"{where}: {part!r} is not a range of question numbers (they count from 1, low-high, e.g. 1-10)"
            )
        positions.extend(range(low - 1, high))
    seen: set[int] = set()
    for p in positions:
        if p in seen:
            raise ConfigError(f"{where}: question {p + 1} is listed twice; list each question once")
        seen.add(p)
    return positions


def format_ranges(positions: Sequence[int]) -> str:
    """The 1-based ranges of 0-based `positions`, in order: [0, 1, 2, 4] -> "1-3,5"."""
    parts: list[str] = []
    start = previous = None
    for p in positions:
        if previous is not None and p == previous + 1:
            previous = p
            continue
        if start is not None:
            parts.append(f"{start + 1}" if start == previous else f"{start + 1}-{previous + 1}")
        start = previous = p
    if start is not None:
        parts.append(f"{start + 1}" if start == previous else f"{start + 1}-{previous + 1}")
    return ",".join(parts)


def _leaves(value: Any, where: str) -> list[Any]:
    """The numbers of a list or list of pairs; anything else is a one-line ConfigError."""
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item, where)]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{where}: {value!r} is not a question number (write 'q3' for the third question)")
    if isinstance(value, str) and not _Q_ITEM.fullmatch(value.strip()):
        raise ConfigError(f"{where}: {value!r} is not a question number (write 'q3' for the third question)")
    return [value]


def _mapped(value: Any, convert) -> Any:
    if isinstance(value, (list, tuple)):
        return [_mapped(item, convert) for item in value]
    return convert(value)


def _as_q(value: Any, base: int) -> Any:
    if isinstance(value, (list, tuple)):
        return [_as_q(v, base) for v in value]
    return f"q{value + 1 - base}"


def _shown(lists: dict[str, Any]) -> str:
    return " and ".join(f"{key} {value!r}" for key, value in lists.items())


@dataclass
class NumberedLists:
    """Lists of question numbers read from one source: the 0-based positions and, for an old 0-based list, the
    warning to show (the "q" form to write instead); `warning` is "" otherwise."""

    positions: dict[str, Any]
    warning: str = ""


def read_number_lists(lists: dict[str, Any], num_questions: int, where: str) -> NumberedLists:
    """0-based positions of the lists of one source ({key: list or list of pairs}) of a questions file of
    `num_questions` questions, by the module's rule (q items, or bare integers by the evidence of 0 and Q)."""
    given = {key: value for key, value in lists.items() if value}
    leaves = [(key, leaf) for key, value in given.items() for leaf in _leaves(value, f"{where}{key}")]
    if not leaves:
        return NumberedLists({key: [] for key in lists})
    bare = [leaf for _, leaf in leaves if isinstance(leaf, int)]
    if bare and len(bare) < len(leaves):
        raise ConfigError(
            f"{where}{_shown(given)} mixes 'q' numbers and bare numbers; write every question as 'q<N>' "
            "(q1 = the first question of the questions file)"
        )
    base, warning = 1, ""
    if bare:
        if 0 in bare and num_questions in bare:
            raise ConfigError(
                f"{where}{_shown(given)} holds both 0 and {num_questions} (the number of questions), so it counts "
                "neither from 0 nor from 1; write every question as 'q<N>' (q1 = the first question)"
            )
        if 0 in bare:
            base = 0
            rewritten = {key: _as_q(value, 0) for key, value in given.items()}
            warning = (
                f"{where}{_shown(given)} counts questions from 0 (the form before question numbers were 1-based); "
                f"read as {_shown(rewritten)}: write that to silence this warning"
            )
        elif num_questions not in bare:
            from_zero = {key: _as_q(value, 0) for key, value in given.items()}
            from_one = {key: _as_q(value, 1) for key, value in given.items()}
            raise ConfigError(
                f"{where}{_shown(given)}: bare numbers without 0 or {num_questions} (the number of questions) may "
                f"count from 0 (the old form) or from 1; write {_shown(from_zero)} if they count from 0, "
                f"{_shown(from_one)} if from 1 (q1 = the first question of the questions file)"
            )

    def position(leaf: Any) -> int:
        number = leaf + 1 - base if isinstance(leaf, int) else int(_Q_ITEM.fullmatch(leaf.strip())[1])
        if not 1 <= number <= num_questions:
            raise ConfigError(
                f"{where}{_shown(given)}: {leaf!r} is not a question of the questions file (q1..q{num_questions})"
            )
        return number - 1

    return NumberedLists({key: _mapped(lists[key], position) for key in lists}, warning)


def as_q_items(positions: Any) -> Any:
    """0-based positions (a list, or pairs) as the "q" items makd writes: [2, [3, 4]] -> ["q3", ["q4", "q5"]]."""
    return _as_q(positions, 0)


@dataclass(frozen=True)
class AspectColumns:
    """What each target column answers: the 0-based question it belongs to (its place in the questions file the
    numbers address) and, for a multiple-choice question, its 0-based option (None for a yes/no question).
    `num_questions` is how many questions that file has (before any DATASET.QUESTIONS_USED selection)."""

    questions: tuple[int, ...]
    options: tuple[int | None, ...]
    num_questions: int

    @classmethod
    def yes_no(cls, num_questions: int) -> AspectColumns:
        """One column per question, in order."""
        return cls(tuple(range(num_questions)), (None,) * num_questions, num_questions)

    def __len__(self) -> int:
        return len(self.questions)

    def labels(self) -> list[str]:
        """ "q1", "q2", ... ("q3A", "q3B" for the options of a multiple-choice question)."""
        return [label(q, o) for q, o in zip(self.questions, self.options)]

    def tags(self) -> list[str]:
        return [tag(q, o) for q, o in zip(self.questions, self.options)]

    def numbers(self) -> list[int]:
        """The 1-based question number of each column."""
        return [q + 1 for q in self.questions]

    def columns_of(self, position: int) -> list[int]:
        """The columns answering the question at 0-based `position` (none when it is not used)."""
        return [c for c, q in enumerate(self.questions) if q == position]

    def select(self, columns: Sequence[int]) -> AspectColumns:
        return AspectColumns(
            tuple(self.questions[c] for c in columns), tuple(self.options[c] for c in columns), self.num_questions
        )
