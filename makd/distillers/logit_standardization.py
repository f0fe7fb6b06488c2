"""Logit standardisation (Sun et al., CVPR 2024): z-score each logit vector before the temperature softmax.

A drop-in change to KD and DKD (switch KD.LOGIT_STAND / DKD.LOGIT_STAND): teacher and student logits are
each mapped to (z - mean(z)) / std(z) per sample, then divided by a base temperature, so the student only
has to match the teacher's logit *shape*, not its range.
"""

from __future__ import annotations

import torch

EPSILON = 1e-7  # keeps a constant logit vector (std 0) finite: it maps to all zeros


def standardize_logits(logits: torch.Tensor) -> torch.Tensor:
    """[B, K] -> [B, K] with zero mean and unit standard deviation per row.

    The standard deviation is the population one, sqrt(mean((z - mean z)^2)), as the paper's definition.
    """
    centred = logits - logits.mean(dim=1, keepdim=True)
    return centred / (centred.pow(2).mean(dim=1, keepdim=True).sqrt() + EPSILON)
