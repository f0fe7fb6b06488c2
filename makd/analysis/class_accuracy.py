"""Per-class accuracy and the confusion matrix of a scored split (tools/eval.py): which classes a student gets
wrong, and what it takes them for.

The confusion matrix is int64 [C, C], row = true class, column = top-1 prediction (makd.engine.evaluate). From
it: per class the images, the correct ones, top-1 (%) and the class it is most often taken for; the largest
off-diagonal cells. Written as CSV (the matrix with class names on both axes; one row per class) and as a figure
(each row divided by its images, so a cell is the share of that class predicted as the column's class).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from makd.analysis.plots import confusion_figure
from makd.atomic_files import atomic_write_text

PRINTED_CLASSES = 40  # more classes than this: the table printed shows the worst ones (the CSV holds all)


@dataclass(frozen=True)
class ClassAccuracy:
    name: str
    images: int
    correct: int
    confused_with: str  # the class it is most often predicted as, "" when never wrong
    confused_count: int

    @property
    def top1(self) -> float:
        """Top-1 (%) of the class; NaN when the split holds none of its images."""
        return 100.0 * self.correct / self.images if self.images else float("nan")


def per_class(confusion: np.ndarray, class_names: Sequence[str]) -> list[ClassAccuracy]:
    """One entry per class, in class order, from a [C, C] confusion matrix (row = true class)."""
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion must be [C, C] for {len(class_names)} classes, got {confusion.shape}")
    rows = []
    for c, name in enumerate(class_names):
        wrong = confusion[c].copy()
        wrong[c] = 0
        other = int(wrong.argmax())
        rows.append(
            ClassAccuracy(
                name,
                int(confusion[c].sum()),
                int(confusion[c, c]),
                class_names[other] if wrong[other] else "",
                int(wrong[other]),
            )
        )
    return rows


def top_confusions(confusion: np.ndarray, class_names: Sequence[str], k: int = 5) -> list[tuple[str, str, int, float]]:
    """The `k` largest off-diagonal cells: (true class, predicted class, images, share of the true class's images)."""
    confusion = np.asarray(confusion)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    cells = [np.unravel_index(i, off.shape) for i in order]
    return [
        (class_names[t], class_names[p], int(off[t, p]), float(off[t, p] / confusion[t].sum()))
        for t, p in cells
        if off[t, p] > 0
    ]


def table_lines(confusion: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """The per-class table (worst class first; the worst PRINTED_CLASSES of a larger C) and the top confusions."""
    rows = per_class(confusion, class_names)
    shown = sorted(rows, key=lambda r: (r.top1 if r.images else 101.0, r.name))
    width = max(len("class"), *(len(r.name) for r in shown))
    lines = [f"{'class':<{width}}  images  correct  top-1 (%)  most often taken for"]
    for r in shown[:PRINTED_CLASSES]:
        taken = f"{r.confused_with} ({r.confused_count})" if r.confused_with else "-"
        top1 = f"{r.top1:9.2f}" if r.images else "        -"
        lines.append(f"{r.name:<{width}}  {r.images:6d}  {r.correct:7d}  {top1}  {taken}")
    if len(shown) > PRINTED_CLASSES:
        lines.append(f"... and {len(shown) - PRINTED_CLASSES} better classes (all {len(shown)} in the per-class CSV)")
    pairs = top_confusions(confusion, class_names)
    if pairs:
        lines.append(
            "most frequent mistakes: "
            + "; ".join(f"{t} -> {p} {n} ({100 * share:.0f} % of {t})" for t, p, n, share in pairs)
        )
    return lines


def confusion_csv(confusion: np.ndarray, class_names: Sequence[str]) -> str:
    """The matrix with the class names as first column and header (row = true class, column = predicted)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, np.asarray(confusion)):
        writer.writerow([name, *(int(v) for v in row)])
    return out.getvalue()


def per_class_csv(confusion: np.ndarray, class_names: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class", "images", "correct", "top1", "most_often_taken_for", "taken_for_images"])
    for r in per_class(confusion, class_names):
        top1 = f"{r.top1:.4f}" if r.images else ""
        writer.writerow([r.name, r.images, r.correct, top1, r.confused_with, r.confused_count])
    return out.getvalue()


def write_class_accuracy(
    out_dir: str | os.PathLike, prefix: str, confusion: np.ndarray, class_names: Sequence[str], title: str
) -> list[Path]:
    """<prefix>_confusion.csv / .png and <prefix>_per_class.csv in `out_dir` (created), each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{prefix}_{name}" for name in ("confusion.csv", "per_class.csv", "confusion.png")]
    atomic_write_text(paths[0], confusion_csv(confusion, class_names))
    atomic_write_text(paths[1], per_class_csv(confusion, class_names))
    confusion_figure(np.asarray(confusion), class_names, paths[2], title)
    return paths
