"""DKD (Zhao et al., CVPR 2022): the KD loss split into target-class (TCKD) and non-target-class (NCKD) terms.

With p = softmax(z / T): TCKD = KL([p_t, 1 - p_t] of the teacher || of the student) (binary, target vs rest),
NCKD = KL over the C - 1 non-target classes renormalised among themselves; both times T^2, mean over the batch.
loss = DKD.CE_WEIGHT x CE + w(epoch) x (DKD.ALPHA x TCKD + DKD.BETA x NCKD), warm-up w = min(epoch / WARMUP, 1)
with the 1-based epoch (the first epoch gets 1 / WARMUP), as mdistiller. The distiller learns the epoch from the
trainer's `set_epoch` (0-based) before each epoch. Keys and defaults are mdistiller's; DKD.LOGIT_STAND z-scores
both logit vectors first and then uses DKD.BASE_TEMPERATURE as T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS, Distiller, linear_warmup, warmed_up_weights
from makd.distillers.logit_standardization import standardize_logits
from makd.distillers.losses import class_cross_entropy
from makd.errors import ConfigError


def add_dkd_config(cfg: CN) -> None:
    """The DKD.* group (mdistiller's keys and defaults, plus the logit-standardisation switch); idempotent."""
    if "DKD" in cfg:
        return
    cfg.DKD = CN()
    cfg.DKD.CE_WEIGHT = 1.0  # weight of the cross-entropy with the labels (DKD only; MaKD_DKD uses MaKD.CE_WEIGHT)
    cfg.DKD.ALPHA = 1.0  # weight of TCKD (target vs the rest)
    cfg.DKD.BETA = 8.0  # weight of NCKD (among the non-target classes); mdistiller's CIFAR configs use 6, 2 or 0.5
    cfg.DKD.T = 4.0  # temperature of both terms
    cfg.DKD.WARMUP = 20  # epochs over which the distillation terms ramp linearly up to full weight
    cfg.DKD.LOGIT_STAND = False  # (new) z-score both logit vectors before the softmax (Sun et al. 2024)
    cfg.DKD.BASE_TEMPERATURE = 2.0  # (new) T used instead of DKD.T when LOGIT_STAND is on


def check_dkd_config(cfg: CN) -> None:
    for key in ("T", "BASE_TEMPERATURE"):
        if cfg.DKD[key] <= 0:
            raise ConfigError(f"DKD.{key} must be > 0, got {cfg.DKD[key]}")
    for key in ("CE_WEIGHT", "ALPHA", "BETA"):
        if cfg.DKD[key] < 0:
            raise ConfigError(f"DKD.{key} must be >= 0, got {cfg.DKD[key]}")
    if cfg.DKD.WARMUP < 0:
        raise ConfigError(f"DKD.WARMUP must be >= 0 epochs (0 = no warm-up), got {cfg.DKD.WARMUP}")


def dkd_temperature(cfg: CN) -> float:
    """The temperature of both terms: DKD.BASE_TEMPERATURE with logit standardisation, else DKD.T."""
    return cfg.DKD.BASE_TEMPERATURE if cfg.DKD.LOGIT_STAND else cfg.DKD.T


dkd_warmup_factor = linear_warmup  # DKD's warm-up of its two terms, mdistiller's


def _target_split(log_probs_all: torch.Tensor, scaled: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log [p_target, 1 - p_target] [B, 2] in log space (stable when p_target is near 1)."""
    log_p_target = log_probs_all.gather(1, target[:, None])
    others = scaled.masked_fill(F.one_hot(target, scaled.shape[1]).bool(), float("-inf"))
    log_rest = torch.logsumexp(others, dim=1, keepdim=True) - torch.logsumexp(scaled, dim=1, keepdim=True)
    return torch.cat([log_p_target, log_rest], dim=1)


def _non_target_log_probs(scaled: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log softmax over the C - 1 non-target entries of each row -> [B, C - 1] (target column removed)."""
    keep = ~F.one_hot(target, scaled.shape[1]).bool()
    return F.log_softmax(scaled[keep].view(scaled.shape[0], -1), dim=1)


def dkd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    logit_stand: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each T^2 x KL(teacher || student) averaged over the batch; logits [B, C], labels [B]."""
    s, t = student_logits.float(), teacher_logits.float()
    if logit_stand:
        s, t = standardize_logits(s), standardize_logits(t)
    s, t = s / temperature, t / temperature
    log_s, log_t = F.log_softmax(s, dim=1), F.log_softmax(t, dim=1)

    def kl(log_student: torch.Tensor, log_teacher: torch.Tensor) -> torch.Tensor:
        return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2

    tckd = kl(_target_split(log_s, s, labels), _target_split(log_t, t, labels))
    nckd = kl(_non_target_log_probs(s, labels), _non_target_log_probs(t, labels))
    return tckd, nckd


def warmed_up(weights: dict[str, tuple[float, str]], epoch: int, warmup: int) -> dict[str, tuple[float, str]]:
    """loss_weights with the two DKD terms times the warm-up factor of the 0-based `epoch` (named in their key)."""
    return warmed_up_weights(weights, ("loss_tckd", "loss_nckd"), dkd_warmup_factor(epoch + 1, warmup))


def dkd_losses(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    warmup_factor: float = 1.0,
    logit_stand: bool = False,
) -> dict[str, torch.Tensor]:
    """{"loss_tckd": w x alpha x TCKD, "loss_nckd": w x beta x NCKD} with w the warm-up factor (see dkd_terms)."""
    tckd, nckd = dkd_terms(student_logits, teacher_logits, labels, temperature, logit_stand)
    return {"loss_tckd": warmup_factor * alpha * tckd, "loss_nckd": warmup_factor * beta * nckd}


@DISTILLERS.register("DKD")
class DecoupledKnowledgeDistiller(Distiller):
    name = "DKD"
    needs_teacher = True
    loss_weight_keys = {"loss_ce": "DKD.CE_WEIGHT", "loss_tckd": "DKD.ALPHA", "loss_nckd": "DKD.BETA"}
    class_terms = ("loss_ce", "loss_tckd", "loss_nckd")
    add_config = staticmethod(add_dkd_config)
    check_config = staticmethod(check_dkd_config)

    def __init__(
        self,
        student,
        num_classes: int,
        teacher,
        ce_weight: float = 1.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup: int = 20,
        logit_stand: bool = False,
    ) -> None:
        super().__init__(student, num_classes, 0, teacher)
        self.ce_weight, self.alpha, self.beta = ce_weight, alpha, beta
        self.temperature, self.warmup, self.logit_stand = temperature, warmup, logit_stand

    @classmethod
    def from_config(cls, cfg, student, num_classes: int, num_aspects: int, teacher=None):
        d = cfg.DKD
        return cls(
            student, num_classes, teacher, d.CE_WEIGHT, d.ALPHA, d.BETA, dkd_temperature(cfg), d.WARMUP, d.LOGIT_STAND
        )

    def forward_train(self, batch):
        logits = self.student(batch["image"])  # [B, C]
        losses = {"loss_ce": self.ce_weight * class_cross_entropy(logits, batch["label"])}
        losses.update(
            dkd_losses(
                logits,
                self.teacher_logits(batch),
                batch.get("label_index", batch["label"]),  # DKD splits on the image's own class (also under mixup)
                self.alpha,
                self.beta,
                self.temperature,
                dkd_warmup_factor(self.epoch + 1, self.warmup),
                self.logit_stand,
            )
        )
        return logits, losses

    def loss_weights(self) -> dict[str, tuple[float, str]]:
        return warmed_up(super().loss_weights(), self.epoch, self.warmup)
