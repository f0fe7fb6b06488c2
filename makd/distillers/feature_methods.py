"""What every feature- and relation-based method of the mdistiller family shares (FitNet, AT, SP, VID, RKD, PKT,
NST, KDSVD, OFD, CRD, ReviewKD): the student's and the teacher's intermediate features of one forward pass each
(makd.models.features), their shapes for building adaptors, the class cross-entropy, and the config rules.

A method's adaptors (regressors, connectors, embeddings, fusion modules, variance nets, memory banks) are ordinary
submodules / buffers of the distiller: the optimizer gets their parameters (`learnable_parameters()`), checkpoints
hold them under "distiller_extra" (so --resume continues exactly) and student.pth does not (it is the student's
state_dict alone). The teacher runs online on the student's view at every step: its features cannot be
precomputed, so DISTILLER.TEACHER_PRECOMPUTE is refused for these methods.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from makd.distillers.base import Distiller
from makd.distillers.losses import class_cross_entropy
from makd.errors import ConfigError
from makd.models.features import FeatureExtractor, Features, probe_features


def add_weights_group(cfg: CN, group: str, ce_weight: float, feat_weight: float) -> CN:
    """cfg.<group> with mdistiller's LOSS.CE_WEIGHT / LOSS.FEAT_WEIGHT (idempotent: an existing group is returned)."""
    if group in cfg:
        return cfg[group]
    node = CN()
    node.LOSS = CN()
    node.LOSS.CE_WEIGHT = ce_weight  # weight of the class cross-entropy
    node.LOSS.FEAT_WEIGHT = feat_weight  # weight of the method's distillation term
    cfg[group] = node
    return node


def check_weights(cfg: CN, group: str) -> None:
    """LOSS.CE_WEIGHT and LOSS.FEAT_WEIGHT >= 0, and an online teacher (see the module docstring)."""
    for key in ("CE_WEIGHT", "FEAT_WEIGHT"):
        if cfg[group].LOSS[key] < 0:
            raise ConfigError(f"{group}.LOSS.{key} must be >= 0, got {cfg[group].LOSS[key]}")
    check_online_teacher(cfg)


def check_online_teacher(cfg: CN) -> None:
    if cfg.DISTILLER.TEACHER_PRECOMPUTE:
        raise ConfigError(
            f"DISTILLER.TEACHER_PRECOMPUTE cannot be used with DISTILLER.TYPE {cfg.DISTILLER.TYPE}: the method reads "
            "the teacher's intermediate features of each augmented view; set DISTILLER.TEACHER_PRECOMPUTE False"
        )


def check_input_size(cfg: CN, key: str) -> None:
    """mdistiller's <METHOD>.INPUT_SIZE keys measured the adaptors' shapes at a fixed size; makd measures them at
    DATASET.IMAGE_SIZE, so a value given must be that size (an adaptor built for other shapes would not fit)."""
    group, leaf = key.split(".")
    size = list(cfg[group][leaf])
    if size and size != [cfg.DATASET.IMAGE_SIZE, cfg.DATASET.IMAGE_SIZE]:
        raise ConfigError(
            f"{key} {size} differs from DATASET.IMAGE_SIZE {cfg.DATASET.IMAGE_SIZE}: the adaptors are built for the "
            f"training images' feature shapes; remove {key} (or set it to [] or the image size)"
        )


def paired_stages(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(student map, teacher map) pairs of the deepest min(S_s, S_t) stages, deepest last.

    Networks with as many stages pair stage by stage (every shipped pair); otherwise the deepest stages, which
    carry the same semantics, are paired (mdistiller's OFD aligns the same way; its AT, NST, VID and KDSVD zip
    from the shallowest stage, which pairs the same stages when the counts agree).
    """
    count = min(len(student), len(teacher))
    return list(zip(student[len(student) - count :], teacher[len(teacher) - count :]))


def pool_to_common_size(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The larger of two maps [B, C, H, W] average-pooled (adaptively) to the smaller one's H x W."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    if a.shape[-1] > b.shape[-1]:
        return F.adaptive_avg_pool2d(a, b.shape[-2:]), b
    return a, F.adaptive_avg_pool2d(b, a.shape[-2:])


class FeatureDistiller(Distiller):
    """A teacher-using method that reads intermediate features (see the module docstring).

    Subclasses set `student_preact` / `teacher_preact` when they read pre-activation maps, and build their adaptors
    from `self.student_shape` / `self.teacher_shape` (Features of one zero image, eval mode: [1, ...] tensors).
    """

    needs_teacher = True
    combines_with_aspects = True  # MaKD_<name> exists (makd.distillers.aspect_combination)
    student_preact = False
    teacher_preact = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # mdistiller's two keys of every feature method, for its loss_ce and loss_<name> (a method with other keys,
        # ReviewKD, or a combination, MaKD_<name>, declares its own)
        if cls.name and "loss_weight_keys" not in cls.__dict__:
            cls.loss_weight_keys = {
                "loss_ce": f"{cls.name}.LOSS.CE_WEIGHT",
                f"loss_{cls.name.lower()}": f"{cls.name}.LOSS.FEAT_WEIGHT",
            }

    def __init__(self, student: nn.Module, num_classes: int, teacher: nn.Module, image_size: int, ce_weight: float):
        super().__init__(student, num_classes, 0, teacher)
        self.ce_weight = ce_weight
        teacher_net = getattr(teacher, "model", teacher)  # a ClassLogitsTeacher wraps the network
        self.student_shape = probe_features(student, image_size, preact=self.student_preact, label="student")
        self.teacher_shape = probe_features(teacher_net, image_size, preact=self.teacher_preact, label="teacher")
        # Plain attributes, not submodules: the hooks live on the student's and teacher's own modules.
        self._student_features = FeatureExtractor(student, preact=self.student_preact, label="student")
        self._teacher_features = FeatureExtractor(teacher_net, preact=self.teacher_preact, label="teacher")

    def features(self, batch: dict[str, torch.Tensor]) -> tuple[Features, Features]:
        """(student Features with gradients, teacher Features without) of batch["image"]; logits [B, C] each."""
        student = self._student_features(batch["image"])
        with torch.no_grad():
            teacher = self._teacher_features(batch["image"])
        teacher.logits = teacher.logits[:, : self.num_classes]
        return student, teacher

    def cross_entropy(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.ce_weight * class_cross_entropy(logits, batch["label"])
