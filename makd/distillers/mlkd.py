"""MLKD, multi-level logit distillation (Jin, Wang & Lin, CVPR 2023): align the student's predictions with the
teacher's at three levels, over several temperatures and over a weak and a strong view of each image.

With p = softmax(z / T) [B, C] at each temperature T of MLKD.TEMPERATURES (prediction augmentation):
  instance level  T^2 x KL(p_t || p_s), summed over classes, averaged over samples;
  batch level     ||p_t p_t^T - p_s p_s^T||_F^2 / B   (the [B, B] similarity of the batch's predictions);
  class level     ||p_t^T p_t - p_s^T p_s||_F^2 / C   (the [C, C] correlation of the classes).
loss_ce = MLKD.CE_WEIGHT x (CE(weak) + CE(strong)); loss_kd, loss_bc, loss_cc = MLKD.KD_WEIGHT x sums of the
instance, batch and class terms. Which terms the sums hold is MLKD.FORMULATION:

- "repository" (default): the loss of the MLKD repository's code, term for term, which produced the published numbers:
  loss_kd = the weak view's instance terms x the fraction of samples at or below the median teacher confidence (its
  mask multiplies an already averaged loss, so it only scales), plus the strong view's instance terms, where the
  code takes T = 2 and T = 6 from the weak view; loss_bc and loss_cc = the weak view's batch and class terms, scaled
  by the fraction of samples / classes at or below the median (the class mask from each class's summed probability).
- "symmetric": every level on both views; with MLKD.CONFIDENCE_MASK the weak view's terms leave out the samples
  below the batch median of the teacher's confidence (instance and batch levels: the kept rows only, averaged over
  them) and the classes below the median summed probability (class level: the kept block, / their number). Its
  batch and class terms weigh about 4x the repository's, and at the repository's lr 0.025 it did not train on a
  demo-sized set where the repository's loss did (docs/health.md).

Defaults follow the MLKD repository's configs (CE 0.1, KD 0.9: mdistiller's KD defaults, which they inherit;
temperatures 2-6; RandAugment(2, 10) strong view) and its res32x4 -> res8x4 learning rate 0.025 is in
configs/cifar100/resnet32x4_resnet8x4_mlkd.yaml. The strong view is torchvision's RandAugment on uint8 images (the
repository's own RandAugment also pastes a random cutout).
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
    # "repository": the MLKD repository's loss as its code computes it (the published numbers); "symmetric": every
    # level on both views, with the masks below (docs/methods.md)
    cfg.MLKD.FORMULATION = "repository"
    cfg.MLKD.CONFIDENCE_MASK = (
        True  # symmetric only: leave the teacher's below-median-confidence samples / classes out of the weak view
    )


FORMULATIONS = ("repository", "symmetric")
# the temperatures whose "strong" instance term the repository's code computes on the weak view
REPOSITORY_WEAK_VIEW_TEMPERATURES = (2.0, 6.0)


def check_mlkd_config(cfg: CN) -> None:
    m = cfg.MLKD
    for key in ("CE_WEIGHT", "KD_WEIGHT"):
        if m[key] < 0:
            raise ConfigError(f"MLKD.{key} must be >= 0, got {m[key]}")
    if m.FORMULATION not in FORMULATIONS:
        raise ConfigError(f"MLKD.FORMULATION {m.FORMULATION!r} is unknown; use {' or '.join(FORMULATIONS)}")
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


def teacher_confidence(teacher_weak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(each sample's confidence [B], each class's summed probability [C]) of the teacher's weak-view predictions at
    T = 1: what both formulations' masks compare with their batch median."""
    probabilities = F.softmax(wide_float(teacher_weak), dim=1)
    return probabilities.max(dim=1).values, probabilities.sum(dim=0)


def repository_terms(
    weak: torch.Tensor, strong: torch.Tensor, teacher_weak: torch.Tensor, teacher_strong: torch.Tensor, temperatures
) -> dict[str, torch.Tensor]:
    """The MLKD repository's kd, bc and cc sums (before MLKD.KD_WEIGHT), as its code computes them."""
    confidence, mass = teacher_confidence(teacher_weak)
    # its masks keep what is at or below the median, then multiply a loss already averaged: a scale, the kept fraction
    sample_fraction = (confidence <= torch.quantile(confidence, 0.5)).to(confidence.dtype).mean()
    class_fraction = (mass <= torch.quantile(mass, 0.5)).to(mass.dtype).mean()
    weak_instance = sum(instance_term(weak, teacher_weak, t).mean() for t in temperatures)
    strong_instance = sum(
        instance_term(weak, teacher_weak, t).mean()
        if float(t) in REPOSITORY_WEAK_VIEW_TEMPERATURES
        else instance_term(strong, teacher_strong, t).mean()
        for t in temperatures
    )
    return {
        "kd": sample_fraction * weak_instance + strong_instance,
        "bc": sample_fraction * sum(batch_term(weak, teacher_weak, t) for t in temperatures),
        "cc": class_fraction * sum(class_term(weak, teacher_weak, t) for t in temperatures),
    }


def confident(teacher_weak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept samples [B] bool, kept classes [C] bool): at or above the batch median of the teacher's confidence
    (max probability, T = 1) and of each class's summed probability."""
    confidence, mass = teacher_confidence(teacher_weak)
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
    loss_weight_keys = {"loss_ce": "MLKD.CE_WEIGHT", "loss_kd": "MLKD.KD_WEIGHT", "loss_bc": "MLKD.KD_WEIGHT",
                        "loss_cc": "MLKD.KD_WEIGHT"}  # fmt: skip
    # the instance level is KD's term at several temperatures: a class target, as KD's is (Distiller.class_terms)
    class_terms = ("loss_ce", "loss_kd")

    def __init__(
        self,
        student,
        num_classes: int,
        teacher,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        temperatures=(2.0, 3.0, 4.0, 5.0, 6.0),
        confidence_mask: bool = True,
        formulation: str = "repository",
    ) -> None:
        super().__init__(student, num_classes, 0, teacher)
        if formulation not in FORMULATIONS:
            raise ValueError(f"MLKD formulation {formulation!r} is unknown; use {' or '.join(FORMULATIONS)}")
        self.ce_weight, self.kd_weight = ce_weight, kd_weight
        self.temperatures, self.confidence_mask = [float(t) for t in temperatures], confidence_mask
        self.formulation = formulation

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None):
        m = cfg.MLKD
        return cls(student, num_classes, teacher, m.CE_WEIGHT, m.KD_WEIGHT, list(m.TEMPERATURES), m.CONFIDENCE_MASK,
                   m.FORMULATION)  # fmt: skip

    @torch.no_grad()
    def _teacher(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(images)[:, : self.num_classes]

    def forward_train(self, batch):
        if "image_strong" not in batch:
            raise ValueError("MLKD trains on two views: the batch has no image_strong (build the data from the config)")
        weak = self.student(batch["image"])  # [B, C]; first, so a wrapper sees the recipe view first
        strong = self.student(batch["image_strong"])
        teacher_weak, teacher_strong = self._teacher(batch["image"]), self._teacher(batch["image_strong"])
        if self.formulation == "repository":
            terms = repository_terms(weak, strong, teacher_weak, teacher_strong, self.temperatures)
        else:
            samples = classes = None
            if self.confidence_mask:
                samples, classes = confident(teacher_weak)
            weak_terms = mlkd_terms(weak, teacher_weak, self.temperatures, samples, classes)
            strong_terms = mlkd_terms(strong, teacher_strong, self.temperatures)
            terms = {name: weak_terms[name] + strong_terms[name] for name in ("kd", "bc", "cc")}
        labels = batch["label"]
        return weak, {
            "loss_ce": self.ce_weight * (class_cross_entropy(weak, labels) + class_cross_entropy(strong, labels)),
            **{f"loss_{name}": self.kd_weight * terms[name] for name in ("kd", "bc", "cc")},
        }
