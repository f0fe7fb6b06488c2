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


def aspect_agreement(predicted: np.ndarray, teacher: np.ndarray) -> dict[str, float]:
    """Agreement of the student's aspect head sigmoid outputs [N, Q] with teacher P(yes) [N, Q].

    mae: mean |predicted - teacher|; auc: mean over aspects (with both answers present) of the AUC of the
    student's score for the teacher's hard answer (P(yes) >= 0.5).
    """
    mae = float(np.abs(predicted - teacher).mean())
    aucs = [binary_auc(predicted[:, q], teacher[:, q] >= 0.5) for q in range(teacher.shape[1])]
    valid = [a for a in aucs if not np.isnan(a)]
    return {"aspect_mae": mae, "aspect_auc": float(np.mean(valid)) if valid else float("nan")}
