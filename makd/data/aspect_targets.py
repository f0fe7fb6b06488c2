"""The paper's target controls: training targets from the teacher's rows (joined by makd.formats.target_sources)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from makd.errors import ConfigError

TARGET_MODES = ("teacher", "random", "shuffled", "class_mean")


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
