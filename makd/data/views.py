"""Target-aware views: what a training view (mirrored, cropped) does to the teacher's aspect targets.

The teacher (stage 2) answered the whole, unflipped image. On a mirrored view the target of an
orientation question ("Is the head on the left?") is wrong, and a small crop may cut away what a
question asks about. A `ViewPolicy` turns (stored targets, drawn view) into (targets, mask) for one
sample; the mask [Q] is 1 where the BCE supervises the aspect and 0 where it ignores it:

- mirrored view, teacher rows of the mirrored image given (DATASET.ASPECT_JSON_FLIP): those rows;
- mirrored view otherwise, MaKD.FLIP_POLICY "mask": flip-sensitive aspects masked;
  "mirror": each declared pair (i, j) swaps targets, flip-sensitive aspects without a pair masked;
  "keep": targets unchanged (the official code's behaviour);
- crop showing less than MaKD.MIN_CROP_AREA of the image, MaKD.SMALL_CROP "mask": all aspects masked
  (the class label still trains; "bound" instead keeps crops from being that small, see transforms).
- Aspects without a target (NaN) are always masked.

Flip-sensitive questions are question numbers of the questions file ("q3"; makd.formats.question_numbers, which
also reads the old 0-based lists), from MaKD.FLIP_SENSITIVE, from "flip_sensitive" in the sidecar of
DATASET.QUESTIONS, and the members of every mirror pair (MaKD.FLIP_MIRROR or the sidecar's "flip_mirror"). A
question DATASET.QUESTIONS_USED leaves out has no column to mask; a multiple-choice question masks all its options.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch

from makd.data.transforms import View
from makd.errors import ConfigError
from makd.formats.files import read_sidecar
from makd.formats.question_numbers import AspectColumns, read_number_lists

logger = logging.getLogger(__name__)


def _indices(values: Iterable, num_aspects: int, where: str) -> list[int]:
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_aspects:
            raise ConfigError(
                f"{where}: {value!r} is not a target column in 0..{num_aspects - 1} (0-based positions; users write "
                "question numbers, read by view_policy_from_cfg)"
            )
        out.append(int(value))
    return out


def _pairs(values: Iterable, num_aspects: int, where: str) -> list[tuple[int, int]]:
    pairs, seen = [], set()
    for pair in values:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConfigError(f"{where}: {pair!r} is not a pair [i, j] of question positions")
        i, j = _indices(pair, num_aspects, where)
        if i == j or i in seen or j in seen:
            raise ConfigError(
                f"{where}: question q{(i if i in seen or i == j else j) + 1} is in more than one mirror pair"
            )
        seen.update((i, j))
        pairs.append((min(i, j), max(i, j)))
    return sorted(pairs)


class ViewPolicy:
    """(targets [Q], View, mirrored-image targets [Q] | None) -> (targets [Q], mask [Q] float)."""

    def __init__(
        self,
        num_aspects: int,
        *,
        flip_sensitive: Sequence[int] = (),
        flip_mirror: Sequence[tuple[int, int]] = (),
        flip_policy: str = "mask",
        min_crop_area: float = 0.0,
        small_crop: str = "mask",
        sources: Sequence[str] = (),
        labels: Sequence[str] | None = None,
    ) -> None:
        """`flip_sensitive` and `flip_mirror` are 0-based target columns; `labels` names each column for the record
        (default "q1", "q2", ...)."""
        q = int(num_aspects)
        mirror = _pairs(flip_mirror, q, "MaKD.FLIP_MIRROR")
        sensitive = set(_indices(flip_sensitive, q, "MaKD.FLIP_SENSITIVE")) | {i for pair in mirror for i in pair}
        self.num_aspects, self.flip_policy = q, flip_policy
        self.flip_sensitive, self.flip_mirror = sorted(sensitive), mirror
        self.min_crop_area, self.small_crop, self.sources = float(min_crop_area), small_crop, list(sources)
        self.labels = list(labels) if labels is not None else [f"q{c + 1}" for c in range(q)]
        permutation = torch.arange(q)
        for i, j in mirror:
            permutation[i], permutation[j] = j, i
        paired = {i for pair in mirror for i in pair}
        self._permutation = permutation
        self._sensitive = torch.tensor(self.flip_sensitive, dtype=torch.long)
        self._unpaired = torch.tensor(sorted(sensitive - paired), dtype=torch.long)

    def apply(
        self, targets: torch.Tensor, view: View, flipped_targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets and BCE mask of one sample under `view` (see the module docstring for the rules)."""
        if view.hflip and flipped_targets is not None:
            targets = flipped_targets
        elif view.hflip and self.flip_policy == "mirror":
            targets = targets[self._permutation]
        mask = torch.isfinite(targets).to(torch.float32)
        if view.hflip and flipped_targets is None:
            if self.flip_policy == "mask":
                mask[self._sensitive] = 0.0
            elif self.flip_policy == "mirror":
                mask[self._unpaired] = 0.0
        if self.small_crop == "mask" and view.crop_area < self.min_crop_area:
            mask.zero_()
        return targets, mask

    def describe(self, flip_rows: str = "") -> dict:
        """JSON-ready record for summary.json: what a mirrored or small view does to the targets."""
        return {
            "flip_policy": "teacher_views" if flip_rows else self.flip_policy,
            "flip_rows": flip_rows or None,
            "flip_sensitive": [self.labels[c] for c in self.flip_sensitive],  # question numbers, as the config's
            "flip_mirror": [[self.labels[i], self.labels[j]] for i, j in self.flip_mirror],
            "flip_sensitive_from": self.sources,
            "min_crop_area": self.min_crop_area,
            "small_crop": self.small_crop if self.min_crop_area > 0 else None,
        }


def _flip_lists(sensitive, mirror, names: tuple[str, str], where: str) -> tuple[list, list]:
    """The raw lists of one source, their shapes checked: a list of numbers and a list of pairs."""
    if not isinstance(sensitive, (list, tuple)) or not isinstance(mirror, (list, tuple)):
        raise ConfigError(f"{where}{names[0]} and {names[1]} must be lists")
    for pair in mirror:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConfigError(f"{where}{names[1]}: {pair!r} is not a pair [i, j] of questions (e.g. ['q3', 'q4'])")
    return list(sensitive), [list(p) for p in mirror]


def _read_flip_questions(sensitive, mirror, names: tuple[str, str], num_questions: int, where: str) -> tuple:
    """0-based question positions of one source's two lists (makd.formats.question_numbers' rule, evidence shared)."""
    sensitive, mirror = _flip_lists(sensitive, mirror, names, where)
    read = read_number_lists({names[0]: sensitive, names[1]: mirror}, num_questions, where)
    if read.warning:
        logger.warning(read.warning)
    return read.positions[names[0]], [tuple(p) for p in read.positions[names[1]]]


def view_policy_from_cfg(cfg, num_aspects: int, columns: AspectColumns | None = None) -> ViewPolicy:
    """The policy of `cfg`: MaKD.FLIP_* keys plus the questions file's sidecar ("flip_sensitive", "flip_mirror").

    `columns` says which question of the questions file each of the `num_aspects` target columns answers (default:
    one column per question, every question); question numbers are mapped to those columns.
    """
    m = cfg.MaKD
    columns = columns or AspectColumns.yes_no(num_aspects)
    names = ("MaKD.FLIP_SENSITIVE", "MaKD.FLIP_MIRROR")
    sensitive, mirror = _read_flip_questions(m.FLIP_SENSITIVE, m.FLIP_MIRROR, names, columns.num_questions, "")
    sources = ["config"] if sensitive or mirror else []
    if cfg.DATASET.QUESTIONS:
        meta = read_sidecar(cfg.DATASET.QUESTIONS) or {}
        where = f"{cfg.DATASET.QUESTIONS}.meta.json"
        side_sensitive, side_mirror = _read_flip_questions(
            meta.get("flip_sensitive") or [], meta.get("flip_mirror") or [], ("flip_sensitive", "flip_mirror"),
            columns.num_questions, f"{where}: ",
        )  # fmt: skip
        if side_sensitive or side_mirror:
            sources.append(where)
        sensitive += side_sensitive
        _pairs(mirror, columns.num_questions, "MaKD.FLIP_MIRROR")  # each question in one pair of the config
        declared = {tuple(sorted(p)) for p in mirror}
        mirror += [p for p in _pairs(side_mirror, columns.num_questions, f"{where} flip_mirror") if p not in declared]
    # questions -> target columns: every column of a sensitive question; a pair swaps two yes/no columns, and a pair
    # with one question left out by DATASET.QUESTIONS_USED leaves the other merely flip-sensitive
    sensitive_columns = [c for q in sensitive for c in columns.columns_of(q)]
    mirror_columns = []
    for i, j in mirror:
        first, second = columns.columns_of(i), columns.columns_of(j)
        if first and second:
            if len(first) != 1 or len(second) != 1:
                raise ConfigError(
                    f"mirror pair [q{i + 1}, q{j + 1}]: a pair swaps the answers of two yes/no questions, but one of "
                    "them is multiple choice; list it as flip-sensitive instead"
                )
            mirror_columns.append((first[0], second[0]))
        else:
            sensitive_columns += first + second
    return ViewPolicy(
        num_aspects,
        flip_sensitive=sensitive_columns,
        flip_mirror=mirror_columns,
        flip_policy=m.FLIP_POLICY,
        min_crop_area=m.MIN_CROP_AREA,
        small_crop=m.SMALL_CROP,
        sources=sources,
        labels=columns.labels(),
    )
