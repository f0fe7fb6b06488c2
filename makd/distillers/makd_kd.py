"""MaKD_KD: MaKD's two terms (CE + aspect BCE on a C + Q head) plus the KD term to a CNN teacher's class logits.

loss_ce = MaKD.CE_WEIGHT x CE, loss_aspect = MaKD.ALPHA x BCE (MaKD.TEMPERATURE softening, aspect mask honoured),
loss_kd = KD.LOSS.KD_WEIGHT x T^2 x KL on the C class logits, T = KD.TEMPERATURE (KD.BASE_TEMPERATURE with
KD.LOGIT_STAND). KD.LOSS.CE_WEIGHT is not used: the class cross-entropy is MaKD's.
"""

from __future__ import annotations

from makd.distillers.base import DISTILLERS, Distiller
from makd.distillers.kd import add_kd_config, check_kd_config, kd_loss, kd_temperature
from makd.distillers.losses import makd_losses
from makd.distillers.makd import checked_aspects


@DISTILLERS.register("MaKD_KD")
class MultiAspectKnowledgeDistiller(Distiller):
    name = "MaKD_KD"
    needs_aspects = True
    needs_teacher = True
    add_config = staticmethod(add_kd_config)
    check_config = staticmethod(check_kd_config)

    def __init__(self, student, num_classes: int, num_aspects: int, teacher, cfg) -> None:
        super().__init__(student, num_classes, num_aspects, teacher)
        self.ce_weight, self.alpha, self.aspect_temperature = cfg.MaKD.CE_WEIGHT, cfg.MaKD.ALPHA, cfg.MaKD.TEMPERATURE
        self.kd_weight, self.temperature, self.logit_stand = (
            cfg.KD.LOSS.KD_WEIGHT,
            kd_temperature(cfg),
            cfg.KD.LOGIT_STAND,
        )

    @classmethod
    def from_config(cls, cfg, student, num_classes: int, num_aspects: int, teacher=None):
        return cls(student, num_classes, num_aspects, teacher, cfg)

    def forward_train(self, batch):
        aspects, mask = checked_aspects(batch)
        logits = self.student(batch["image"])  # [B, C + Q]
        C = self.num_classes
        losses = makd_losses(
            logits, batch["label"], aspects, C, self.ce_weight, self.alpha, self.aspect_temperature, mask=mask
        )
        losses["loss_kd"] = self.kd_weight * kd_loss(
            logits[:, :C], self.teacher_logits(batch), self.temperature, self.logit_stand
        )
        return logits[:, :C], losses
