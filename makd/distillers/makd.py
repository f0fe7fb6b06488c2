"""MaKD: cross-entropy on the C class logits + BCE on the Q aspect logits against the MLLM's P(yes).

Its config group (MaKD.*) lives in makd/config/defaults.py: the data builder reads MaKD.ASPECT_NUM and
MaKD.TARGETS for every aspect-trained method (MaKD, MaKD_KD, MaKD_DKD).
"""

from __future__ import annotations

import torch

from makd.distillers.base import DISTILLERS, Distiller
from makd.distillers.losses import makd_losses


def checked_aspects(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(targets [B, Q], mask [B, Q] or None) of a batch, refusing NaN where a target is supervised.

    With batch["aspect_mask"] (1 = supervise, 0 = ignore), ignored entries may be NaN and are zeroed here
    so that they cannot poison the loss's gradient; without a mask every entry must be finite.
    """
    aspects, mask = batch["aspects"], batch.get("aspect_mask")
    supervised = aspects[mask > 0] if mask is not None else aspects
    if not torch.isfinite(supervised).all():
        raise ValueError("a training batch holds NaN aspect targets (an image without an aspect row)")
    if mask is not None:
        aspects = torch.where(mask > 0, aspects, torch.zeros_like(aspects))
    return aspects, mask


@DISTILLERS.register("MaKD")
class MultiAspectDistiller(Distiller):
    name = "MaKD"
    needs_aspects = True
    loss_weight_keys = {"loss_ce": "MaKD.CE_WEIGHT", "loss_aspect": "MaKD.ALPHA"}

    def __init__(
        self,
        student,
        num_classes: int,
        num_aspects: int,
        ce_weight: float,
        alpha: float,
        temperature: float,
        teacher=None,
    ) -> None:
        super().__init__(student, num_classes, num_aspects, teacher)
        self.ce_weight, self.alpha, self.temperature = ce_weight, alpha, temperature

    @classmethod
    def from_config(cls, cfg, student, num_classes: int, num_aspects: int, teacher=None):
        return cls(student, num_classes, num_aspects, cfg.MaKD.CE_WEIGHT, cfg.MaKD.ALPHA, cfg.MaKD.TEMPERATURE)

    def forward_train(self, batch):
        aspects, mask = checked_aspects(batch)
        logits = self.student(batch["image"])  # [B, C + Q]
        losses = makd_losses(
            logits,
            batch["label"],
            aspects,
            self.num_classes,
            self.ce_weight,
            self.alpha,
            self.temperature,
            mask=mask,
        )
        return logits[:, : self.num_classes], losses
