"""LaViD_KD: LaViD's two terms (CE + lambda x MSE of the auxiliary head to the class targets) plus the KD term.

LaViD's strongest variant adds a CNN teacher. loss_ce = LaViD.CE_WEIGHT x CE, loss_lavid = LaViD.LAMBDA x MSE
(makd.distillers.lavid), loss_kd = KD.LOSS.KD_WEIGHT x T^2 x KL to the teacher's class logits, T = KD.TEMPERATURE
(KD.BASE_TEMPERATURE with KD.LOGIT_STAND). KD.LOSS.CE_WEIGHT is not used: the class cross-entropy is LaViD's.
"""

from __future__ import annotations

from makd.distillers.base import DISTILLERS
from makd.distillers.kd import add_kd_config, check_kd_config, kd_loss, kd_temperature
from makd.distillers.lavid import LaViDDistiller, add_lavid_config, check_lavid_config, lavid_table


def add_lavid_kd_config(cfg) -> None:
    add_lavid_config(cfg)
    add_kd_config(cfg)


def check_lavid_kd_config(cfg) -> None:
    check_lavid_config(cfg)
    check_kd_config(cfg)


@DISTILLERS.register("LaViD_KD")
class LaViDKnowledgeDistiller(LaViDDistiller):
    name = "LaViD_KD"
    needs_teacher = True
    loss_weight_keys = {**LaViDDistiller.loss_weight_keys, "loss_kd": "KD.LOSS.KD_WEIGHT"}
    class_terms = ("loss_ce", "loss_kd")
    add_config = staticmethod(add_lavid_kd_config)
    check_config = staticmethod(check_lavid_kd_config)

    @classmethod
    def from_config(cls, cfg, student, num_classes: int, num_aspects: int, teacher=None, class_names=None):
        table = lavid_table(cfg, class_names)
        distiller = cls(student, num_classes, table, cfg.LaViD.LAMBDA, cfg.LaViD.CE_WEIGHT, teacher)
        distiller.kd_weight, distiller.temperature = cfg.KD.LOSS.KD_WEIGHT, kd_temperature(cfg)
        distiller.logit_stand = cfg.KD.LOGIT_STAND
        return distiller

    def forward_train(self, batch):
        logits, losses = super().forward_train(batch)  # [B, C], CE + MSE
        losses["loss_kd"] = self.kd_weight * kd_loss(
            logits, self.teacher_logits(batch), self.temperature, self.logit_stand
        )
        return logits, losses
