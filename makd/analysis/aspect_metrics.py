"""Per-question evaluation of the teacher's answers and of the student's aspect head (aspect_metrics.json).

Each entry names its question by number, counted from 1 as the questions file's lines ("number": 3, "label":
"q3"; "q3B" for an option of a multiple-choice question), and by its text ("question") when the questions file is
known; a run trained on some questions (DATASET.QUESTIONS_USED) keeps their numbers. Files written before the
numbering was 1-based carry a 0-based "index" instead; `entry_label` reads both.

For each question q, over the images of one split whose teacher row is finite:
- teacher_mean: mean teacher P(yes);
- teacher_within_class_sd: mean over the classes present of the within-class sd (ddof 0) of P(yes): 0 when the
  teacher answers at the class level, large when the answer varies between images of one class;
- yes_rate: fraction of images with P(yes) >= 0.5 (the thresholded answer);
- mutual_information_bits: I(answer; class) in bits of the thresholded answer with the class label, i.e. how much
  the question tells about the label (at most min(1, log2 C));
- student_auc: ROC AUC of the student head's sigmoid output for the thresholded teacher answer, computed only when
  the teacher says yes for at least `min_count` images and no for at least `min_count` (makd.engine.metrics.
  MIN_AUC_COUNT, 10): None otherwise, and left out of the mean; teacher_yes_images / teacher_no_images are those
  counts; student_mae: mean |student - teacher| (all three only with the student's predictions).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from makd.atomic_files import atomic_write_json
from makd.engine.metrics import MIN_AUC_COUNT, counted_auc
from makd.errors import MakdError
from makd.formats.question_numbers import AspectColumns

THRESHOLD = 0.5  # a teacher answer is "yes" when P(yes) >= THRESHOLD (as the trainer's aspect AUC)
# Per-question entries that are counts or names, not metrics: no mean and no TensorBoard scalar ("index": the
# 0-based number of files written before question numbers were 1-based).
NOT_METRICS = ("number", "label", "index", "question", "teacher_yes_images", "teacher_no_images")


def entry_label(entry: Mapping[str, Any]) -> str:
    """ "q3" of a per-question entry, from its "label", or from the 0-based "index" of an older file."""
    if "label" in entry:
        return str(entry["label"])
    return f"q{int(entry['index']) + 1}"


def entry_tag(entry: Mapping[str, Any]) -> str:
    """entry_label with a two-digit number ("q03", "q03B"), for names that sort."""
    text = entry_label(entry)
    digits = len(text) - len(text[1:].lstrip("0123456789"))
    return f"q{int(text[1:digits]):02d}{text[digits:]}"


class AspectMetricsError(MakdError):
    """The arrays given to aspect_metrics do not fit together."""


def mutual_information_bits(answers: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """I(A; Y) in bits for boolean answers [N] and integer labels [N] in [0, num_classes)."""
    n = answers.size
    if n == 0:
        return math.nan
    joint = np.zeros((2, num_classes))
    np.add.at(joint, (answers.astype(int), labels), 1.0)
    joint /= n
    p_answer, p_label = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    mask = joint > 0
    return float((joint[mask] * np.log2(joint[mask] / (p_answer @ p_label)[mask])).sum())


def aspect_metrics(
    teacher: np.ndarray,
    student_prob: np.ndarray | None,
    labels: np.ndarray,
    num_classes: int,
    questions: Sequence[str] | None = None,
    min_count: int = MIN_AUC_COUNT,
    columns: AspectColumns | None = None,
) -> dict[str, Any]:
    """Per-question metrics (see the module docstring) and their means over questions.

    teacher [N, Q] teacher P(yes) in [0, 1] (rows with a NaN are left out: images without a teacher row);
    student_prob [N, Q] sigmoid of the student's aspect logits, or None; labels [N] class indices; questions: Q
    texts stored beside the numbers; columns: the question (and option) each column answers (default: column q is
    question q + 1). Returns {"num_images", "num_aspects", "num_classes", "auc_min_count",
    "student_auc_questions" (how many questions have an AUC), "questions": [...], "mean": {...}}; values that do
    not exist (an AUC with fewer than `min_count` answers on a side) are NaN here, None in the JSON file.
    """
    teacher = np.asarray(teacher, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if teacher.ndim != 2 or teacher.shape[0] != labels.size:
        raise AspectMetricsError(f"teacher must be [N, Q] with N = {labels.size} labels, got shape {teacher.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise AspectMetricsError(f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    if student_prob is not None:
        student_prob = np.asarray(student_prob, dtype=np.float64)
        if student_prob.shape != teacher.shape:
            raise AspectMetricsError(f"student_prob has shape {student_prob.shape}, teacher {teacher.shape}")
    if questions is not None and len(questions) != teacher.shape[1]:
        raise AspectMetricsError(f"{len(questions)} questions for {teacher.shape[1]} aspects")
    columns = columns if columns is not None else AspectColumns.yes_no(teacher.shape[1])
    if len(columns) != teacher.shape[1]:
        raise AspectMetricsError(f"{len(columns)} numbered columns for {teacher.shape[1]} aspects")
    numbers, labels_of = columns.numbers(), columns.labels()
    rows = np.isfinite(teacher).all(axis=1)
    teacher, labels = teacher[rows], labels[rows]
    student = student_prob[rows] if student_prob is not None else None
    classes = np.unique(labels)
    per_question = []
    for q in range(teacher.shape[1]):
        answers = teacher[:, q] >= THRESHOLD
        entry: dict[str, Any] = {
            "number": numbers[q],  # 1-based, as the questions file's lines
            "label": labels_of[q],
            "question": questions[q] if questions is not None else None,
            "teacher_mean": float(teacher[:, q].mean()) if labels.size else math.nan,
            "teacher_within_class_sd": float(np.mean([teacher[labels == c, q].std() for c in classes]))
            if classes.size
            else math.nan,
            "yes_rate": float(answers.mean()) if labels.size else math.nan,
            "mutual_information_bits": mutual_information_bits(answers, labels, num_classes),
        }
        if student is not None:
            auc, yes, no = counted_auc(student[:, q], answers, min_count)
            entry["student_auc"] = auc
            entry["teacher_yes_images"], entry["teacher_no_images"] = yes, no
            entry["student_mae"] = float(np.abs(student[:, q] - teacher[:, q]).mean()) if labels.size else math.nan
        per_question.append(entry)
    keys = [k for k in per_question[0] if k not in NOT_METRICS] if per_question else []
    mean = {}
    for key in keys:
        values = [e[key] for e in per_question if not math.isnan(e[key])]
        mean[key] = float(np.mean(values)) if values else math.nan
    result = {
        "num_images": int(labels.size),
        "num_aspects": int(teacher.shape[1]),
        "num_classes": int(num_classes),
        "threshold": THRESHOLD,
        "questions": per_question,
        "mean": mean,
    }
    if student is not None:
        result["auc_min_count"] = int(min_count)
        result["student_auc_questions"] = sum(not math.isnan(e["student_auc"]) for e in per_question)
    return result


def json_safe(value: Any) -> Any:
    """NaN / infinities -> None, numpy scalars -> Python numbers, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_aspect_metrics(path: str | os.PathLike, splits: Mapping[str, dict[str, Any]], **extra: Any) -> None:
    """Write {"splits": {"train": aspect_metrics(...), ...}, **extra (e.g. epoch)} as strict JSON, atomically."""
    atomic_write_json(path, json_safe({**extra, "splits": dict(splits)}))


def aspect_scalars(metrics: dict[str, Any], split: str) -> dict[str, float]:
    """Flat {tag: value} for TensorBoard: '<split>_aspect/<metric>/q03' (question 3), '<split>_aspect/<metric>/mean'."""
    scalars: dict[str, float] = {}
    for entry in metrics["questions"]:
        for key, value in entry.items():
            if key not in NOT_METRICS and value is not None and not math.isnan(value):
                scalars[f"{split}_aspect/{key}/{entry_tag(entry)}"] = value
    for key, value in metrics["mean"].items():
        if not math.isnan(value):
            scalars[f"{split}_aspect/{key}/mean"] = value
    return scalars
