"""Classification and aspect-agreement metrics."""

from __future__ import annotations

import numpy as np
import torch


def topk_correct(class_logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k class logits [B, C], for each k (k capped at C)."""
    max_k = min(max(ks), class_logits.shape[1])
    top = class_logits.topk(max_k, dim=1).indices  # [B, max_k]
    hits = top.eq(labels.view(-1, 1))
    return [int(hits[:, : min(k, max_k)].any(dim=1).sum()) for k in ks]


def binary_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """ROC AUC of `scores` [N] for boolean `positives` [N] (Mann-Whitney, ties counted half); NaN if one class."""
    positives = positives.astype(bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Rank of each score, ties sharing their average rank.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# A per-question AUC (student vs teacher, teacher vs truth) is computed only where each side (yes and no answers, or
# truth 1 and 0) holds at least this many images: with n on the smaller side, one image moves the AUC by up to 1/n,
# so from 3 "yes" images among 200 an AUC of 1.0 or 0.33 says nothing, yet it weighed as much as any question in
# the mean. Questions below it are left out of every mean and shown with their counts.
MIN_AUC_COUNT = 10


def counted_auc(scores: np.ndarray, positives: np.ndarray, min_count: int = MIN_AUC_COUNT) -> tuple[float, int, int]:
    """(binary_auc, number of positives, number of negatives) of `scores` [N] for boolean `positives` [N]; the AUC
    is NaN unless each side holds at least `min_count` (MIN_AUC_COUNT)."""
    positives = np.asarray(positives).astype(bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if min(n_pos, n_neg) < max(1, min_count):
        return float("nan"), n_pos, n_neg
    return binary_auc(np.asarray(scores), positives), n_pos, n_neg


def aspect_agreement(predicted: np.ndarray, teacher: np.ndarray, min_count: int = MIN_AUC_COUNT) -> dict[str, float]:
    """Agreement of the student's aspect head sigmoid outputs [N, Q] with teacher P(yes) [N, Q].

    mae: mean |predicted - teacher|; auc: mean over the aspects whose teacher gives at least `min_count` yes and
    `min_count` no answers (P(yes) >= 0.5 is yes; counted_auc) of the AUC of the student's score for the teacher's
    answer, NaN when none does; auc_questions: how many aspects that mean is over.
    """
    mae = float(np.abs(predicted - teacher).mean())
    aucs = [counted_auc(predicted[:, q], teacher[:, q] >= 0.5, min_count)[0] for q in range(teacher.shape[1])]
    valid = [a for a in aucs if not np.isnan(a)]
    return {
        "aspect_mae": mae,
        "aspect_auc": float(np.mean(valid)) if valid else float("nan"),
        "aspect_auc_questions": len(valid),
    }
