"""SP, similarity-preserving KD (Tung & Mori, ICCV 2019): match the batch's pairwise similarity matrices.

For the last stage's maps f [B, C, H, W] flattened to [B, D]: G = f f^T [B, B], each row L2-normalised;
loss_ce = SP.LOSS.CE_WEIGHT x CE; loss_sp = SP.LOSS.FEAT_WEIGHT x ||G_t - G_s||_F^2 / B^2 (the paper's
1/b^2 sum of squared Frobenius distances, for the last stage as mdistiller). Keys and defaults are mdistiller's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS
from makd.distillers.feature_methods import FeatureDistiller, add_weights_group, check_weights


def add_sp_config(cfg: CN) -> None:
    add_weights_group(cfg, "SP", ce_weight=1.0, feat_weight=3000.0)


def check_sp_config(cfg: CN) -> None:
    check_weights(cfg, "SP")


def similarity_matrix(feature: torch.Tensor) -> torch.Tensor:
    """[B, ...] -> [B, B]: f f^T of the flattened features, each row L2-normalised."""
    flat = feature.float().flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


def sp_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """||G_t - G_s||_F^2 / B^2 for maps [B, ...] (the two may differ in every dimension but B)."""
    batch = student_map.shape[0]
    return (similarity_matrix(teacher_map) - similarity_matrix(student_map)).pow(2).sum() / batch**2


@DISTILLERS.register("SP")
class SimilarityPreservingDistiller(FeatureDistiller):
    name = "SP"
    add_config = staticmethod(add_sp_config)
    check_config = staticmethod(check_sp_config)

    def __init__(self, student, num_classes, teacher, image_size, ce_weight=1.0, feat_weight=3000.0):
        super().__init__(student, num_classes, teacher, image_size, ce_weight)
        self.feat_weight = feat_weight

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None):
        loss = cfg.SP.LOSS
        return cls(student, num_classes, teacher, cfg.DATASET.IMAGE_SIZE, loss.CE_WEIGHT, loss.FEAT_WEIGHT)

    def forward_train(self, batch):
        student, teacher = self.features(batch)
        return student.logits, {
            "loss_ce": self.cross_entropy(student.logits, batch),
            "loss_sp": self.feat_weight * sp_loss(student.stages[-1], teacher.stages[-1]),
        }
