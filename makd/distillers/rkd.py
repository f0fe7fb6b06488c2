"""RKD, relational KD (Park et al., CVPR 2019): match the distances and the angles among the batch's pooled features.

Distance term: the pairwise Euclidean distances (squared with RKD.PDIST.SQUARED; squared distances clamped at
RKD.PDIST.EPSILON before the root, the diagonal 0), each matrix divided by the mean of its positive entries, compared
with the Huber loss (smooth L1, delta 1) averaged over the B x B entries. Angle term: for every triplet (i, j, k) the
cosine of the angle at j, <e_ij, e_kj> with e the unit difference vectors, compared with the Huber loss over the
B^3 entries. loss_ce = RKD.LOSS.CE_WEIGHT x CE; loss_rkd = RKD.LOSS.FEAT_WEIGHT x (DISTANCE_WEIGHT x distance +
ANGLE_WEIGHT x angle), the paper's 25 and 50. Keys and defaults are mdistiller's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS
from makd.distillers.feature_methods import FeatureDistiller, add_weights_group, check_weights
from makd.distillers.losses import wide_float
from makd.errors import ConfigError


def add_rkd_config(cfg: CN) -> None:
    if "RKD" in cfg:
        return
    group = add_weights_group(cfg, "RKD", ce_weight=1.0, feat_weight=1.0)
    group.DISTANCE_WEIGHT = 25.0  # weight of the distance term inside the RKD term (the paper's lambda_D)
    group.ANGLE_WEIGHT = 50.0  # weight of the angle term (the paper's lambda_A)
    group.PDIST = CN()
    group.PDIST.EPSILON = 1e-12  # squared distances are clamped here before the root (its gradient at 0)
    group.PDIST.SQUARED = False  # compare squared distances instead of distances


def check_rkd_config(cfg: CN) -> None:
    check_weights(cfg, "RKD")
    for key in ("DISTANCE_WEIGHT", "ANGLE_WEIGHT"):
        if cfg.RKD[key] < 0:
            raise ConfigError(f"RKD.{key} must be >= 0, got {cfg.RKD[key]}")
    if cfg.RKD.PDIST.EPSILON <= 0:
        raise ConfigError(f"RKD.PDIST.EPSILON must be > 0, got {cfg.RKD.PDIST.EPSILON}")


def pairwise_distances(embedding: torch.Tensor, squared: bool, eps: float) -> torch.Tensor:
    """[B, D] -> [B, B] Euclidean distances (squared when asked), zero diagonal."""
    square = embedding.pow(2).sum(dim=1)
    distances = (square[:, None] + square[None, :] - 2 * embedding @ embedding.t()).clamp(min=eps)
    if not squared:
        distances = distances.sqrt()
    off_diagonal = 1.0 - torch.eye(len(embedding), device=embedding.device, dtype=distances.dtype)
    return distances * off_diagonal


def _normalised_distances(embedding: torch.Tensor, squared: bool, eps: float) -> torch.Tensor:
    distances = pairwise_distances(embedding, squared, eps)
    return distances / distances[distances > 0].mean()


def _angles(embedding: torch.Tensor) -> torch.Tensor:
    """[B, D] -> [B^3]: cos of the angle at j of (i, j, k), from unit vectors e_ji = normalise(x_i - x_j)."""
    unit = F.normalize(embedding[None, :, :] - embedding[:, None, :], p=2, dim=2)  # [j, i, D]
    return torch.bmm(unit, unit.transpose(1, 2)).flatten()


def rkd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    squared: bool = False,
    eps: float = 1e-12,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> torch.Tensor:
    """distance_weight x Huber(distances) + angle_weight x Huber(angles); features [B, ...] of each network."""
    s, t = wide_float(student).flatten(1), wide_float(teacher).flatten(1)
    with torch.no_grad():
        t_distances, t_angles = _normalised_distances(t, squared, eps), _angles(t)
    distance = F.smooth_l1_loss(_normalised_distances(s, squared, eps), t_distances)
    angle = F.smooth_l1_loss(_angles(s), t_angles)
    return distance_weight * distance + angle_weight * angle


@DISTILLERS.register("RKD")
class RelationalDistiller(FeatureDistiller):
    name = "RKD"
    add_config = staticmethod(add_rkd_config)
    check_config = staticmethod(check_rkd_config)

    def __init__(
        self,
        student,
        num_classes,
        teacher,
        image_size,
        ce_weight=1.0,
        feat_weight=1.0,
        distance_weight=25.0,
        angle_weight=50.0,
        squared=False,
        eps=1e-12,
    ):
        super().__init__(student, num_classes, teacher, image_size, ce_weight)
        self.feat_weight, self.distance_weight, self.angle_weight = feat_weight, distance_weight, angle_weight
        self.squared, self.eps = squared, eps

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None):
        r = cfg.RKD
        return cls(
            student,
            num_classes,
            teacher,
            cfg.DATASET.IMAGE_SIZE,
            r.LOSS.CE_WEIGHT,
            r.LOSS.FEAT_WEIGHT,
            r.DISTANCE_WEIGHT,
            r.ANGLE_WEIGHT,
            r.PDIST.SQUARED,
            r.PDIST.EPSILON,
        )

    def forward_train(self, batch):
        student, teacher = self.features(batch)
        term = rkd_loss(student.pooled, teacher.pooled, self.squared, self.eps, self.distance_weight, self.angle_weight)
        return student.logits, {
            "loss_ce": self.cross_entropy(student.logits, batch),
            "loss_rkd": self.feat_weight * term,
        }
