"""Pure loss functions of the distillers (no state, no config); unit-tested against hand values."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def wide_float(x: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision (AMP) tensors; float32 and float64 as they are (a float64 check stays exact)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def soften_targets(targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Teacher P(yes) -> sigmoid(logit(p) / T). T = 1 returns `targets` unchanged.

    T > 1 pulls targets toward 0.5 (softer), T < 1 pushes them toward 0/1 (sharper). Inputs are
    clamped away from {0, 1} first so that logit() stays finite for hard targets.
    """
    if temperature == 1.0:
        return targets
    p = targets.clamp(1e-6, 1.0 - 1e-6)
    return torch.sigmoid(torch.logit(p) / temperature)


def class_cross_entropy(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of class logits [B, C] against integer labels [B]."""
    return F.cross_entropy(class_logits, labels)


def aspect_bce(aspect_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits over [B, Q] aspect outputs and soft targets in [0, 1].

    Without `mask`: the mean over all B * Q entries. With `mask` [B, Q] (1 = supervise, 0 = ignore,
    e.g. a flip-sensitive question on a mirrored view): the mean over the supervised entries only
    (0 when none is); ignored targets may be NaN. An all-ones mask gives the unmasked value.
    """
    if mask is None:
        return F.binary_cross_entropy_with_logits(aspect_logits, targets)
    mask = mask.to(aspect_logits.dtype)
    safe = torch.where(mask > 0, targets, torch.zeros_like(targets))  # NaN * 0 would still be NaN
    per_entry = F.binary_cross_entropy_with_logits(aspect_logits, safe, reduction="none")
    return (per_entry * mask).sum() / mask.sum().clamp_min(1.0)


def makd_losses(
    logits: torch.Tensor,
    labels: torch.Tensor,
    aspect_targets: torch.Tensor,
    num_classes: int,
    ce_weight: float = 1.0,
    alpha: float = 4.0,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """MaKD's two weighted terms for student logits [B, C + Q].

    loss_ce = ce_weight * CE(logits[:, :C], labels); loss_aspect = alpha * BCE(logits[:, C:], soften(targets, T)),
    averaged over the entries `mask` [B, Q] supervises (all when None). `labels` are class indices [B]
    or class distributions [B, C] (label smoothing, mixup).
    """
    if logits.shape[1] != num_classes + aspect_targets.shape[1]:
        raise ValueError(
            f"student gives {logits.shape[1]} outputs but C + Q = {num_classes} + {aspect_targets.shape[1]}"
        )
    class_logits, aspect_logits = logits[:, :num_classes], logits[:, num_classes:]
    return {
        "loss_ce": ce_weight * class_cross_entropy(class_logits, labels),
        "loss_aspect": alpha
        * aspect_bce(aspect_logits.float(), soften_targets(aspect_targets.float(), temperature), mask),
    }
