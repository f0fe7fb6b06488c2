"""Aspect targets per image: the join of an index with an aspect file, and the paper's target controls."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from makd.artifacts import ArtifactError, AspectTable
from makd.config.defaults import ConfigError
from makd.data.image_index import ImageIndex

MISSING_POLICIES = ("error", "drop", "nan")
TARGET_MODES = ("teacher", "random", "shuffled", "class_mean")


# What fixes missing rows, per role: DATASET.MISSING_ASPECTS governs training images only; test rows
# come from DATASET.TEST_ASPECT_JSON alone, and validation images are training images.
_MISSING_ROW_FIX = {
    "training": "run stage 2 on them or set DATASET.MISSING_ASPECTS drop",
    "validation": "run stage 2 on the training images (validation images are carved from them)",
    "test": (
        "run stage 2 on the test images (DATASET.TEST_IMAGE_PATH) and point DATASET.TEST_ASPECT_JSON at its output, "
        "or set DATASET.TEST_ASPECT_JSON '' to evaluate without the aspect metrics"
    ),
}


def join_aspects(
    index: ImageIndex, table: AspectTable, missing: str = "error", role: str = "training"
) -> tuple[ImageIndex, np.ndarray]:
    """Rows of `table` in the order of `index`, matched by image id: (index, targets [N, Q] float32).

    `missing` says what happens to images without a row: "error" (ArtifactError naming how many and
    the first ids), "drop" (they leave the returned index) or "nan" (they keep a NaN row, for splits
    whose aspect targets only feed metrics). `role` names the images in the error ("training").
    """
    if missing not in MISSING_POLICIES:
        raise ConfigError(
            f"DATASET.MISSING_ASPECTS {missing!r} is unknown; use one of {', '.join(MISSING_POLICIES[:2])}"
        )
    row_of = table.index()
    rows = [row_of.get(i) for i in index.ids]
    absent = [i for i, r in zip(index.ids, rows) if r is None]
    if absent and (missing == "error" or len(absent) == len(index)):
        hint = ""
        if len(absent) == len(index):  # nothing matched: almost always ids made from another root or layout
            hint = (
                f"; no id matches: the file's ids look like {', '.join(repr(i) for i in table.ids[:2])}, these "
                f"images' like {', '.join(repr(i) for i in index.ids[:2])} "
                f"(run stage 2 on {index.root or index.source})"
            )
        raise ArtifactError(
            f"{len(absent)} {role} images have no row in {table.path} (first: {', '.join(absent[:3])}); "
            f"{_MISSING_ROW_FIX.get(role, _MISSING_ROW_FIX['training'])}{hint}"
        )
    if missing == "drop" and absent:
        keep = [p for p, r in enumerate(rows) if r is not None]
        index, rows = index.subset(keep), [rows[p] for p in keep]
    targets = np.full((len(rows), table.num_aspects), np.nan, dtype=np.float32)
    found = np.array([r is not None for r in rows], dtype=bool)
    if found.any():
        targets[found] = table.values[np.array([r for r in rows if r is not None], dtype=np.int64)]
    return index, targets


def make_targets(mode: str, teacher: np.ndarray, labels: Sequence[int], seed: int) -> np.ndarray:
    """Training targets [N, Q] float32 from the teacher's P(yes) rows [N, Q] (row i = image i of class labels[i]).

    "teacher": the rows as they are. "random": uniform in [0, 1) per image and aspect (the paper's
    Table 3(b) control; same seed, same values). "shuffled": the rows permuted across images (the
    marginal statistics stay, the image-target link goes). "class_mean": every image gets the mean
    row of its class (keeps only class-level knowledge).
    """
    teacher = np.asarray(teacher, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if teacher.ndim != 2 or len(teacher) != len(labels):
        raise ValueError(f"teacher targets must be [N, Q] with N = {len(labels)} labels, got shape {teacher.shape}")
    if mode != "random" and not np.isfinite(teacher).all():
        raise ValueError("teacher targets hold NaN rows (images without an aspect row); join with missing='drop'")
    rng = np.random.default_rng(seed)
    if mode == "teacher":
        return teacher.copy()
    if mode == "random":
        return rng.random(teacher.shape, dtype=np.float32)
    if mode == "shuffled":
        return teacher[rng.permutation(len(teacher))]
    if mode == "class_mean":
        out = np.empty_like(teacher)
        for label in np.unique(labels):
            rows = labels == label
            out[rows] = teacher[rows].mean(axis=0, dtype=np.float64).astype(np.float32)
        return out
    raise ConfigError(f"MaKD.TARGETS {mode!r} is unknown; use one of {', '.join(TARGET_MODES)}")
