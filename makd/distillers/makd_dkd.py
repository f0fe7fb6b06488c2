"""MaKD_DKD: MaKD's two terms (CE + aspect BCE on a C + Q head) plus DKD's TCKD/NCKD terms on the C class logits.

loss_ce = MaKD.CE_WEIGHT x CE, loss_aspect = MaKD.ALPHA x BCE (MaKD.TEMPERATURE softening, aspect mask honoured),
loss_tckd / loss_nckd = warm-up x DKD.ALPHA x TCKD / DKD.BETA x NCKD with DKD.T, DKD.WARMUP, DKD.LOGIT_STAND as in
DKD. DKD.CE_WEIGHT is not used: the class cross-entropy is MaKD's.
"""

from __future__ import annotations

from makd.distillers.base import DISTILLERS
from makd.distillers.dkd import (
    add_dkd_config,
    check_dkd_config,
    dkd_losses,
    dkd_temperature,
    dkd_warmup_factor,
    warmed_up,
)
from makd.distillers.makd import MultiAspectDistiller


@DISTILLERS.register("MaKD_DKD")
class MultiAspectDecoupledDistiller(MultiAspectDistiller):
    name = "MaKD_DKD"
    needs_teacher = True
    loss_weight_keys = {**MultiAspectDistiller.loss_weight_keys, "loss_tckd": "DKD.ALPHA", "loss_nckd": "DKD.BETA"}
    class_terms = ("loss_ce", "loss_tckd", "loss_nckd")
    add_config = staticmethod(add_dkd_config)
    check_config = staticmethod(check_dkd_config)

    @classmethod
    def from_config(cls, cfg, student, num_classes: int, num_aspects: int, teacher=None):
        m, d = cfg.MaKD, cfg.DKD
        distiller = cls(student, num_classes, num_aspects, m.CE_WEIGHT, m.ALPHA, m.TEMPERATURE, teacher)
        distiller.dkd_alpha, distiller.dkd_beta, distiller.warmup = d.ALPHA, d.BETA, d.WARMUP
        distiller.dkd_temperature, distiller.logit_stand = dkd_temperature(cfg), d.LOGIT_STAND
        return distiller

    def forward_train(self, batch):
        class_logits, losses = super().forward_train(batch)  # [B, C]; MaKD's CE + aspect BCE
        losses.update(
            dkd_losses(
                class_logits,
                self.teacher_logits(batch),
                batch.get("label_index", batch["label"]),  # DKD splits on the image's own class (also under mixup)
                self.dkd_alpha,
                self.dkd_beta,
                self.dkd_temperature,
                dkd_warmup_factor(self.epoch + 1, self.warmup),
                self.logit_stand,
            )
        )
        return class_logits, losses

    def loss_weights(self) -> dict[str, tuple[float, str]]:
        return warmed_up(super().loss_weights(), self.epoch, self.warmup)
