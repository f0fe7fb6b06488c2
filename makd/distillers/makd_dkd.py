"""MaKD_DKD: MaKD's two terms (CE + aspect BCE on a C + Q head) plus DKD's TCKD/NCKD terms on the C class logits.

loss_ce = MaKD.CE_WEIGHT x CE, loss_aspect = MaKD.ALPHA x BCE (MaKD.TEMPERATURE softening, aspect mask honoured),
loss_tckd / loss_nckd = warm-up x DKD.ALPHA x TCKD / DKD.BETA x NCKD with DKD.T, DKD.WARMUP, DKD.LOGIT_STAND as in
DKD. DKD.CE_WEIGHT is not used: the class cross-entropy is MaKD's.
"""

from __future__ import annotations

from makd.distillers.base import DISTILLERS, Distiller
from makd.distillers.dkd import add_dkd_config, check_dkd_config, dkd_losses, dkd_temperature, dkd_warmup_factor
from makd.distillers.losses import makd_losses
from makd.distillers.makd import checked_aspects


@DISTILLERS.register("MaKD_DKD")
class MultiAspectDecoupledDistiller(Distiller):
    name = "MaKD_DKD"
    needs_aspects = True
    needs_teacher = True
    add_config = staticmethod(add_dkd_config)
    check_config = staticmethod(check_dkd_config)

    def __init__(self, student, num_classes: int, num_aspects: int, teacher, cfg) -> None:
        super().__init__(student, num_classes, num_aspects, teacher)
        self.ce_weight, self.alpha, self.aspect_temperature = cfg.MaKD.CE_WEIGHT, cfg.MaKD.ALPHA, cfg.MaKD.TEMPERATURE
        self.dkd_alpha, self.dkd_beta, self.warmup = cfg.DKD.ALPHA, cfg.DKD.BETA, cfg.DKD.WARMUP
        self.temperature, self.logit_stand = dkd_temperature(cfg), cfg.DKD.LOGIT_STAND

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
        ramp = dkd_warmup_factor(self.epoch + 1, self.warmup)
        teacher_logits = self.teacher_logits(batch)
        losses.update(
            dkd_losses(
                logits[:, :C],
                teacher_logits,
                batch.get("label_index", batch["label"]),  # DKD splits on the image's own class (also under mixup)
                self.dkd_alpha,
                self.dkd_beta,
                self.temperature,
                ramp,
                self.logit_stand,
            )
        )
        return logits[:, :C], losses
