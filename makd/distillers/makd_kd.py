"""MaKD_KD: MaKD's two terms (CE + aspect BCE on a C + Q head) plus the KD term to a CNN teacher's class logits.

loss_ce = MaKD.CE_WEIGHT x CE, loss_aspect = MaKD.ALPHA x BCE (MaKD.TEMPERATURE softening, aspect mask honoured),
loss_kd = KD.LOSS.KD_WEIGHT x T^2 x KL on the C class logits, T = KD.TEMPERATURE (KD.BASE_TEMPERATURE with
KD.LOGIT_STAND). KD.LOSS.CE_WEIGHT is not used: the class cross-entropy is MaKD's.
"""

from __future__ import annotations

from makd.distillers.base import DISTILLERS
from makd.distillers.kd import add_kd_config, check_kd_config, kd_loss, kd_temperature
from makd.distillers.makd import MultiAspectDistiller


@DISTILLERS.register("MaKD_KD")
class MultiAspectKnowledgeDistiller(MultiAspectDistiller):
    name = "MaKD_KD"
    needs_teacher = True
    loss_weight_keys = {**MultiAspectDistiller.loss_weight_keys, "loss_kd": "KD.LOSS.KD_WEIGHT"}
    class_terms = ("loss_ce", "loss_kd")
    add_config = staticmethod(add_kd_config)
    check_config = staticmethod(check_kd_config)

    @classmethod
    def from_config(cls, cfg, student, num_classes: int, num_aspects: int, teacher=None):
        m = cfg.MaKD
        distiller = cls(student, num_classes, num_aspects, m.CE_WEIGHT, m.ALPHA, m.TEMPERATURE, teacher)
        distiller.kd_weight, distiller.kd_temperature = cfg.KD.LOSS.KD_WEIGHT, kd_temperature(cfg)
        distiller.logit_stand = cfg.KD.LOGIT_STAND
        return distiller

    def forward_train(self, batch):
        class_logits, losses = super().forward_train(batch)  # [B, C]; MaKD's CE + aspect BCE
        losses["loss_kd"] = self.kd_weight * kd_loss(
            class_logits, self.teacher_logits(batch), self.kd_temperature, self.logit_stand
        )
        return class_logits, losses
