"""MaKD: cross-entropy on the C class logits + BCE on the Q aspect logits against the MLLM's P(yes)."""

from __future__ import annotations

import torch

from makd.distillers.base import Distiller
from makd.distillers.losses import makd_losses


class MultiAspectDistiller(Distiller):
    def __init__(
        self, student, num_classes: int, num_aspects: int, ce_weight: float, alpha: float, temperature: float
    ) -> None:
        super().__init__(student, num_classes, num_aspects)
        self.ce_weight, self.alpha, self.temperature = ce_weight, alpha, temperature

    def forward_train(self, batch):
        labels, aspects = batch["label"], batch["aspects"]
        logits = self.student(batch["image"])  # [B, C + Q]
        if not torch.isfinite(aspects).all():
            raise ValueError("a training batch holds NaN aspect targets (an image without an aspect row)")
        mask = batch.get("aspect_mask")  # [B, Q], 0 where a view policy ignores an aspect (makd/data/views.py)
        losses = makd_losses(
            logits, labels, aspects, self.num_classes, self.ce_weight, self.alpha, self.temperature, mask
        )
        return logits[:, : self.num_classes], losses
