"""NONE: the cross-entropy baseline (student head has C outputs)."""

from __future__ import annotations

from makd.distillers.base import Distiller
from makd.distillers.losses import class_cross_entropy


class CrossEntropyBaseline(Distiller):
    def __init__(self, student, num_classes: int, num_aspects: int = 0, ce_weight: float = 1.0) -> None:
        super().__init__(student, num_classes, 0)
        self.ce_weight = ce_weight

    def forward_train(self, batch):
        logits = self.student(batch["image"])  # [B, C]
        return logits, {"loss_ce": self.ce_weight * class_cross_entropy(logits, batch["label"])}
