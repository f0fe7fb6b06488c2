"""NONE: the cross-entropy baseline (student head has C outputs). Also trains the CNN teachers of KD/DKD."""

from __future__ import annotations

from makd.distillers.base import DISTILLERS, Distiller
from makd.distillers.losses import class_cross_entropy


@DISTILLERS.register("NONE", "CE")
class CrossEntropyBaseline(Distiller):
    name = "NONE"
    loss_weight_keys = {"loss_ce": "MaKD.CE_WEIGHT"}

    def __init__(self, student, num_classes: int, num_aspects: int = 0, ce_weight: float = 1.0, teacher=None) -> None:
        super().__init__(student, num_classes, 0, teacher)
        self.ce_weight = ce_weight

    @classmethod
    def from_config(cls, cfg, student, num_classes: int, num_aspects: int, teacher=None):
        # MaKD.CE_WEIGHT, as before the KD family existed: a baseline and a MaKD run weigh CE the same way.
        return cls(student, num_classes, ce_weight=cfg.MaKD.CE_WEIGHT)

    def forward_train(self, batch):
        logits = self.student(batch["image"])  # [B, C]
        return logits, {"loss_ce": self.ce_weight * class_cross_entropy(logits, batch["label"])}
