"""KD (Hinton et al. 2015): cross-entropy + the temperature-softened KL to a frozen CNN teacher's logits.

loss_ce = KD.LOSS.CE_WEIGHT x CE(s, y); loss_kd = KD.LOSS.KD_WEIGHT x T^2 x KL(softmax(t / T) || softmax(s / T)),
the KL summed over classes and averaged over the batch; T^2 keeps the gradient scale independent of T.
Key names and defaults are mdistiller's. With KD.LOGIT_STAND both logit vectors are z-scored first and
T is KD.BASE_TEMPERATURE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS, Distiller
from makd.distillers.logit_standardization import standardize_logits
from makd.distillers.losses import class_cross_entropy
from makd.errors import ConfigError


def add_kd_config(cfg: CN) -> None:
    """The KD.* group (mdistiller's keys and defaults, plus the logit-standardisation switch); idempotent."""
    if "KD" in cfg:
        return
    cfg.KD = CN()
    cfg.KD.TEMPERATURE = 4.0  # T of the softened softmax of teacher and student
    cfg.KD.LOSS = CN()
    cfg.KD.LOSS.CE_WEIGHT = 0.1  # weight of the cross-entropy with the labels
    cfg.KD.LOSS.KD_WEIGHT = 0.9  # weight of T^2 x KL(teacher || student); also the KD term's weight in MaKD_KD
    cfg.KD.LOGIT_STAND = False  # (new) z-score both logit vectors before the softmax (Sun et al. 2024)
    cfg.KD.BASE_TEMPERATURE = 2.0  # (new) T used instead of TEMPERATURE when LOGIT_STAND is on


def check_kd_config(cfg: CN) -> None:
    for key in ("TEMPERATURE", "BASE_TEMPERATURE"):
        if cfg.KD[key] <= 0:
            raise ConfigError(f"KD.{key} must be > 0, got {cfg.KD[key]}")
    for key in ("CE_WEIGHT", "KD_WEIGHT"):
        if cfg.KD.LOSS[key] < 0:
            raise ConfigError(f"KD.LOSS.{key} must be >= 0, got {cfg.KD.LOSS[key]}")


def kd_temperature(cfg: CN) -> float:
    """The temperature the KD term uses: KD.BASE_TEMPERATURE with logit standardisation, else KD.TEMPERATURE."""
    return cfg.KD.BASE_TEMPERATURE if cfg.KD.LOGIT_STAND else cfg.KD.TEMPERATURE


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, logit_stand: bool = False
) -> torch.Tensor:
    """T^2 x KL(softmax(t / T) || softmax(s / T)), summed over the C classes, mean over the batch (logits [B, C])."""
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    if logit_stand:
        student_logits, teacher_logits = standardize_logits(student_logits), standardize_logits(teacher_logits)
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


@DISTILLERS.register("KD")
class KnowledgeDistiller(Distiller):
    name = "KD"
    needs_teacher = True
    loss_weight_keys = {"loss_ce": "KD.LOSS.CE_WEIGHT", "loss_kd": "KD.LOSS.KD_WEIGHT"}
    class_terms = ("loss_ce", "loss_kd")
    add_config = staticmethod(add_kd_config)
    check_config = staticmethod(check_kd_config)

    def __init__(
        self,
        student,
        num_classes: int,
        teacher,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        logit_stand: bool = False,
    ) -> None:
        super().__init__(student, num_classes, 0, teacher)
        self.temperature, self.ce_weight, self.kd_weight, self.logit_stand = (
            temperature,
            ce_weight,
            kd_weight,
            logit_stand,
        )

    @classmethod
    def from_config(cls, cfg, student, num_classes: int, num_aspects: int, teacher=None):
        return cls(
            student,
            num_classes,
            teacher,
            kd_temperature(cfg),
            cfg.KD.LOSS.CE_WEIGHT,
            cfg.KD.LOSS.KD_WEIGHT,
            cfg.KD.LOGIT_STAND,
        )

    def forward_train(self, batch):
        logits = self.student(batch["image"])  # [B, C]
        teacher_logits = self.teacher_logits(batch)  # [B, C], no gradient
        return logits, {
            "loss_ce": self.ce_weight * class_cross_entropy(logits, batch["label"]),
            "loss_kd": self.kd_weight * kd_loss(logits, teacher_logits, self.temperature, self.logit_stand),
        }
