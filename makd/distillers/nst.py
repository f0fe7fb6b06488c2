"""NST, neuron selectivity transfer (Huang & Wang, 2017): match the distributions of the channels' spatial
activation patterns with the squared MMD of a polynomial kernel.

Per paired stage (the larger map pooled to the smaller): each channel's map flattened over H x W and L2-normalised,
f_s [B, Cs, HW], f_t [B, Ct, HW]; with k(a, b) = (a . b)^2 (the paper's degree-2 polynomial, c = 0),
MMD^2 = mean k(t, t') + mean k(s, s') - 2 mean k(s, t) over the channel pairs (and the batch).
loss_ce = NST.LOSS.CE_WEIGHT x CE; loss_nst = NST.LOSS.FEAT_WEIGHT x sum over stages. Keys and defaults are
mdistiller's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS
from makd.distillers.feature_methods import (
    FeatureDistiller,
    add_weights_group,
    check_weights,
    paired_stages,
    pool_to_common_size,
)


def add_nst_config(cfg: CN) -> None:
    add_weights_group(cfg, "NST", ce_weight=1.0, feat_weight=50.0)


def check_nst_config(cfg: CN) -> None:
    check_weights(cfg, "NST")


def polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[B, Ca, N], [B, Cb, N] -> [B, Ca, Cb]: (a_i . b_j)^2."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2)


def stage_mmd(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Squared MMD of one stage pair's channel patterns (see the module docstring)."""
    s, t = pool_to_common_size(student_map.float(), teacher_map.float())
    s = F.normalize(s.flatten(2), dim=2)
    t = F.normalize(t.flatten(2), dim=2)
    return polynomial_kernel(t, t).mean() + polynomial_kernel(s, s).mean() - 2 * polynomial_kernel(s, t).mean()


def nst_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    return sum(stage_mmd(s, t) for s, t in paired_stages(student_maps, teacher_maps))


@DISTILLERS.register("NST")
class NeuronSelectivityDistiller(FeatureDistiller):
    name = "NST"
    add_config = staticmethod(add_nst_config)
    check_config = staticmethod(check_nst_config)

    def __init__(self, student, num_classes, teacher, image_size, ce_weight=1.0, feat_weight=50.0):
        super().__init__(student, num_classes, teacher, image_size, ce_weight)
        self.feat_weight = feat_weight

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None):
        loss = cfg.NST.LOSS
        return cls(student, num_classes, teacher, cfg.DATASET.IMAGE_SIZE, loss.CE_WEIGHT, loss.FEAT_WEIGHT)

    def forward_train(self, batch):
        student, teacher = self.features(batch)
        return student.logits, {
            "loss_ce": self.cross_entropy(student.logits, batch),
            "loss_nst": self.feat_weight * nst_loss(student.stages, teacher.stages),
        }
