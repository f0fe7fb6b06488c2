"""MLKD, multi-level logit distillation (Jin, Wang & Lin, CVPR 2023): align the student's predictions with the
teacher's at three levels, over several temperatures and over a weak and a strong view of each image.

For each view v (the recipe's view and the strong view of DATASET.AUGMENT.STRONG, both seen by both networks) and
each temperature T of MLKD.TEMPERATURES (prediction augmentation), with p = softmax(z / T) [B, C]:
  instance level  T^2 x KL(p_t || p_s), summed over classes, averaged over samples;
  batch level     ||p_t p_t^T - p_s p_s^T||_F^2 / B   (the [B, B] similarity of the batch's predictions);
  class level     ||p_t^T p_t - p_s^T p_s||_F^2 / C   (the [C, C] correlation of the classes).
loss_ce = MLKD.CE_WEIGHT x (CE(weak) + CE(strong)); loss_kd, loss_bc, loss_cc = MLKD.KD_WEIGHT x the instance,
batch and class terms summed over views and temperatures. With MLKD.CONFIDENCE_MASK the weak view's terms leave out
what the teacher is least sure of: samples whose teacher confidence (max probability on the weak view, T = 1) is
below the batch's median (instance and batch levels: the kept samples' rows only, averaged over them), and classes
whose summed teacher probability is below the median (class level: the kept classes' block, / their number).
Defaults follow the MLKD repository's configs (CE 0.1, KD 0.9: mdistiller's KD defaults, which they inherit;
temperatures 2-6; RandAugment(2, 10) strong view) and its res32x4 -> res8x4 learning rate 0.025 is in
configs/cifar100/resnet32x4_resnet8x4_mlkd.yaml.
Differs from the MLKD repository's code (the paper's multi-level alignment is followed): its loss uses the strong
view's instance term only (T = 2 and 6 computed on the weak view by a slip) and no strong-view batch or class term;
its confidence mask keeps the samples at or below the median and multiplies an already averaged loss, so it only
scales each weak term by the kept fraction (about 1/2). The strong view is torchvision's RandAugment on uint8 images
(the repository's own RandAugment also pastes a random cutout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS, Distiller
from makd.distillers.feature_methods import check_online_teacher
from makd.distillers.losses import class_cross_entropy, wide_float
from makd.errors import ConfigError


def add_mlkd_config(cfg: CN) -> None:
    if "MLKD" in cfg:
        return
    cfg.MLKD = CN()
    cfg.MLKD.CE_WEIGHT = 0.1  # weight of the cross-entropy of each view (the MLKD configs inherit KD's 0.1)
    cfg.MLKD.KD_WEIGHT = 0.9  # weight of each alignment term, every level, view and temperature (KD's 0.9)
    cfg.MLKD.TEMPERATURES = [2.0, 3.0, 4.0, 5.0, 6.0]  # prediction augmentation: the temperatures of every level
    cfg.MLKD.CONFIDENCE_MASK = (
        True  # leave the teacher's below-median-confidence samples / classes out of the weak view
    )


def check_mlkd_config(cfg: CN) -> None:
    m = cfg.MLKD
    for key in ("CE_WEIGHT", "KD_WEIGHT"):
        if m[key] < 0:
            raise ConfigError(f"MLKD.{key} must be >= 0, got {m[key]}")
    if not m.TEMPERATURES or any(not isinstance(t, (int, float)) or t <= 0 for t in m.TEMPERATURES):
        raise ConfigError(f"MLKD.TEMPERATURES must be a non-empty list of numbers > 0, got {list(m.TEMPERATURES)}")
    check_online_teacher(cfg)


def instance_term(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 x KL(softmax(t / T) || softmax(s / T)) per sample, summed over classes: [B]."""
    log_s = F.log_softmax(wide_float(student) / temperature, dim=1)
    log_t = F.log_softmax(wide_float(teacher) / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1) * temperature**2


def batch_term(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """||P_t P_t^T - P_s P_s^T||_F^2 / B of the predictions P [B, C] at temperature T."""
    p_s = F.softmax(wide_float(student) / temperature, dim=1)
    p_t = F.softmax(wide_float(teacher) / temperature, dim=1)
    return ((p_t @ p_t.t() - p_s @ p_s.t()) ** 2).sum() / p_s.shape[0]


def class_term(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, classes: torch.Tensor | None = None
) -> torch.Tensor:
    """||P_t^T P_t - P_s^T P_s||_F^2 / C over the [C, C] class correlations (the `classes` block only, when given)."""
    p_s = F.softmax(wide_float(student) / temperature, dim=1)
    p_t = F.softmax(wide_float(teacher) / temperature, dim=1)
    gap = p_t.t() @ p_t - p_s.t() @ p_s
    if classes is not None:
        gap = gap[classes][:, classes]
    return (gap**2).sum() / gap.shape[0]


def confident(teacher_weak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept samples [B] bool, kept classes [C] bool): at or above the batch median of the teacher's confidence
    (max probability, T = 1) and of each class's summed probability."""
    probabilities = F.softmax(wide_float(teacher_weak), dim=1)
    confidence = probabilities.max(dim=1).values
    mass = probabilities.sum(dim=0)
    return confidence >= torch.quantile(confidence, 0.5), mass >= torch.quantile(mass, 0.5)


def mlkd_terms(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperatures: list[float],
    samples: torch.Tensor | None = None,
    classes: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Instance, batch and class terms of one view summed over the temperatures, on `samples` / `classes` when given."""
    if samples is not None:
        student, teacher = student[samples], teacher[samples]
    return {
        "kd": sum(instance_term(student, teacher, t).mean() for t in temperatures),
        "bc": sum(batch_term(student, teacher, t) for t in temperatures),
        "cc": sum(class_term(student, teacher, t, classes) for t in temperatures),
    }


@DISTILLERS.register("MLKD")
class MultiLevelDistiller(Distiller):
    name = "MLKD"
    needs_teacher = True
    needs_strong_view = True
    combines_with_aspects = True
    add_config = staticmethod(add_mlkd_config)
    check_config = staticmethod(check_mlkd_config)

    def __init__(
        self,
        student,
        num_classes: int,
        teacher,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        temperatures=(2.0, 3.0, 4.0, 5.0, 6.0),
        confidence_mask: bool = True,
    ) -> None:
        super().__init__(student, num_classes, 0, teacher)
        self.ce_weight, self.kd_weight = ce_weight, kd_weight
        self.temperatures, self.confidence_mask = [float(t) for t in temperatures], confidence_mask

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None):
        m = cfg.MLKD
        return cls(student, num_classes, teacher, m.CE_WEIGHT, m.KD_WEIGHT, list(m.TEMPERATURES), m.CONFIDENCE_MASK)

    @torch.no_grad()
    def _teacher(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(images)[:, : self.num_classes]

    def forward_train(self, batch):
        if "image_strong" not in batch:
            raise ValueError("MLKD trains on two views: the batch has no image_strong (build the data from the config)")
        weak = self.student(batch["image"])  # [B, C]; first, so a wrapper sees the recipe view first
        strong = self.student(batch["image_strong"])
        teacher_weak, teacher_strong = self._teacher(batch["image"]), self._teacher(batch["image_strong"])
        samples = classes = None
        if self.confidence_mask:
            samples, classes = confident(teacher_weak)
        weak_terms = mlkd_terms(weak, teacher_weak, self.temperatures, samples, classes)
        strong_terms = mlkd_terms(strong, teacher_strong, self.temperatures)
        labels = batch["label"]
        return weak, {
            "loss_ce": self.ce_weight * (class_cross_entropy(weak, labels) + class_cross_entropy(strong, labels)),
            **{f"loss_{name}": self.kd_weight * (weak_terms[name] + strong_terms[name]) for name in ("kd", "bc", "cc")},
        }
