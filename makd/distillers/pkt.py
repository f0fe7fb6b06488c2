"""PKT, probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): match the conditional probability
distributions that the pooled features' cosine similarities define over the batch.

For pooled features z [B, D]: K = (cos(z_i, z_j) + 1) / 2 (cosine similarity mapped to [0, 1]), P = K normalised
per row; loss_ce = PKT.LOSS.CE_WEIGHT x CE; loss_pkt = PKT.LOSS.FEAT_WEIGHT x mean over the B x B entries of
P_t log((P_t + eps) / (P_s + eps)), eps = 1e-7. The mean over entries (not the paper's sum) is the authors' code's
and mdistiller's, for which FEAT_WEIGHT 30000 is tuned. Keys and defaults are mdistiller's.
"""

from __future__ import annotations

import torch
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS
from makd.distillers.feature_methods import FeatureDistiller, add_weights_group, check_weights

EPSILON = 1e-7


def add_pkt_config(cfg: CN) -> None:
    add_weights_group(cfg, "PKT", ce_weight=1.0, feat_weight=30000.0)


def check_pkt_config(cfg: CN) -> None:
    check_weights(cfg, "PKT")


def conditional_similarities(features: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """[B, D] -> [B, B]: rows of (cosine + 1) / 2, normalised to sum to 1 (a zero vector has cosine 0)."""
    unit = features.float() / (features.float().norm(dim=1, keepdim=True) + eps)
    kernel = (unit @ unit.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """Mean over the B x B entries of P_t log((P_t + eps) / (P_s + eps)); features [B, Ds] and [B, Dt]."""
    p_s, p_t = conditional_similarities(student, eps), conditional_similarities(teacher, eps)
    return torch.mean(p_t * torch.log((p_t + eps) / (p_s + eps)))


@DISTILLERS.register("PKT")
class ProbabilisticTransferDistiller(FeatureDistiller):
    name = "PKT"
    add_config = staticmethod(add_pkt_config)
    check_config = staticmethod(check_pkt_config)

    def __init__(self, student, num_classes, teacher, image_size, ce_weight=1.0, feat_weight=30000.0):
        super().__init__(student, num_classes, teacher, image_size, ce_weight)
        self.feat_weight = feat_weight

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None):
        loss = cfg.PKT.LOSS
        return cls(student, num_classes, teacher, cfg.DATASET.IMAGE_SIZE, loss.CE_WEIGHT, loss.FEAT_WEIGHT)

    def forward_train(self, batch):
        student, teacher = self.features(batch)
        return student.logits, {
            "loss_ce": self.cross_entropy(student.logits, batch),
            "loss_pkt": self.feat_weight * pkt_loss(student.pooled, teacher.pooled),
        }
