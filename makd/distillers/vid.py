"""VID, variational information distillation (Ahn et al., CVPR 2019): maximise a variational lower bound of the
mutual information between paired stage maps, a Gaussian q(t | s) with a learned mean and per-channel variance.

Per paired stage (the larger map pooled to the smaller): mu = r(f_s), three 1x1 convs with ReLUs between (student
channels -> teacher channels); sigma_c^2 = softplus(alpha_c) + VID.EPS, one learned alpha per teacher channel,
initialised so sigma^2 starts at VID.INIT_PRED_VAR. The term is the mean over batch, channels and positions of
0.5 x ((f_t - mu)^2 / sigma^2 + log sigma^2), the negative log-likelihood without its constant.
loss_ce = VID.LOSS.CE_WEIGHT x CE; loss_vid = VID.LOSS.FEAT_WEIGHT x sum over stages. Keys and defaults are
mdistiller's.
Differs from mdistiller: the variances are learned, as in the paper; mdistiller keeps its alpha tensors in a plain
Python list, so they are never optimised (nor saved, nor moved to the GPU) and sigma^2 stays 5 throughout.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS
from makd.distillers.feature_methods import (
    FeatureDistiller,
    add_weights_group,
    check_input_size,
    check_weights,
    paired_stages,
    pool_to_common_size,
)
from makd.distillers.losses import wide_float
from makd.errors import ConfigError


def add_vid_config(cfg: CN) -> None:
    if "VID" in cfg:
        return
    group = add_weights_group(cfg, "VID", ce_weight=1.0, feat_weight=1.0)
    group.EPS = 1e-5  # floor of each channel's variance
    group.INIT_PRED_VAR = 5.0  # each channel's variance at the start
    group.INPUT_SIZE = []  # mdistiller's probe size; makd probes at DATASET.IMAGE_SIZE ([] or that size)


def check_vid_config(cfg: CN) -> None:
    check_weights(cfg, "VID")
    check_input_size(cfg, "VID.INPUT_SIZE")
    if cfg.VID.EPS <= 0 or cfg.VID.INIT_PRED_VAR <= cfg.VID.EPS:
        raise ConfigError(
            f"VID.EPS must be > 0 and VID.INIT_PRED_VAR above it, got EPS {cfg.VID.EPS}, "
            f"INIT_PRED_VAR {cfg.VID.INIT_PRED_VAR}"
        )


def mean_regressor(student_channels: int, teacher_channels: int) -> nn.Sequential:
    """[B, Cs, H, W] -> [B, Ct, H, W]: 1x1 conv, ReLU, 1x1 conv, ReLU, 1x1 conv (no biases)."""
    return nn.Sequential(
        nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
        nn.ReLU(),
        nn.Conv2d(teacher_channels, teacher_channels, 1, bias=False),
        nn.ReLU(),
        nn.Conv2d(teacher_channels, teacher_channels, 1, bias=False),
    )


def vid_nll(mean: torch.Tensor, target: torch.Tensor, alpha: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean of 0.5 ((t - mu)^2 / var + log var), var = softplus(alpha) + eps per channel; maps [B, C, H, W]."""
    variance = (nn.functional.softplus(wide_float(alpha)) + eps).view(1, -1, 1, 1)
    return torch.mean(0.5 * ((wide_float(target) - wide_float(mean)) ** 2 / variance + torch.log(variance)))


@DISTILLERS.register("VID")
class VariationalInformationDistiller(FeatureDistiller):
    name = "VID"
    add_config = staticmethod(add_vid_config)
    check_config = staticmethod(check_vid_config)

    def __init__(
        self, student, num_classes, teacher, image_size, ce_weight=1.0, feat_weight=1.0, eps=1e-5, init_var=5.0
    ):
        super().__init__(student, num_classes, teacher, image_size, ce_weight)
        self.feat_weight, self.eps = feat_weight, eps
        pairs = paired_stages(self.student_shape.stages, self.teacher_shape.stages)
        self.regressors = nn.ModuleList(mean_regressor(s.shape[1], t.shape[1]) for s, t in pairs)
        start = math.log(math.expm1(init_var - eps))  # softplus(start) + eps = init_var
        self.log_scales = nn.ParameterList(nn.Parameter(torch.full((t.shape[1],), start)) for _, t in pairs)

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None):
        v = cfg.VID
        return cls(
            student,
            num_classes,
            teacher,
            cfg.DATASET.IMAGE_SIZE,
            v.LOSS.CE_WEIGHT,
            v.LOSS.FEAT_WEIGHT,
            v.EPS,
            v.INIT_PRED_VAR,
        )

    def forward_train(self, batch):
        student, teacher = self.features(batch)
        total = 0.0
        pairs = paired_stages(student.stages, teacher.stages)
        for (f_s, f_t), regressor, alpha in zip(pairs, self.regressors, self.log_scales):
            f_s, f_t = pool_to_common_size(f_s, f_t)
            total = total + vid_nll(regressor(f_s), f_t, alpha, self.eps)
        return student.logits, {
            "loss_ce": self.cross_entropy(student.logits, batch),
            "loss_vid": self.feat_weight * total,
        }
