"""FitNet (Romero et al., ICLR 2015): a regressor maps the student's guided layer onto the teacher's hint layer.

loss_ce = FITNET.LOSS.CE_WEIGHT x CE; loss_fitnet = FITNET.LOSS.FEAT_WEIGHT x mean((r(f_s) - f_t)^2), f the maps
of `[stem, *stages]`[FITNET.HINT_LAYER] (mdistiller's index: 2 = the second stage). The regressor r is a conv
whose output has the teacher's shape (the paper's kernel 1 + s - t; a stride-2 3x3 conv when the student's map is
twice the teacher's, a stride-2 4x4 transposed conv when half), then BatchNorm and ReLU (the paper gives r the
hint layer's non-linearity). Keys and defaults are mdistiller's.
Differs from the paper: one stage (CE + hint term together, as mdistiller and its published table) instead of the
paper's hint pre-training followed by KD.
"""

from __future__ import annotations

import torch
from torch import nn
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS
from makd.distillers.feature_methods import FeatureDistiller, add_weights_group, check_input_size, check_weights
from makd.errors import ConfigError


def add_fitnet_config(cfg: CN) -> None:
    if "FITNET" in cfg:
        return
    group = add_weights_group(cfg, "FITNET", ce_weight=1.0, feat_weight=100.0)
    group.HINT_LAYER = 2  # index into [stem, stage 1, ..., stage S] of both networks (mdistiller's feats list)
    group.INPUT_SIZE = []  # mdistiller's probe size; makd probes at DATASET.IMAGE_SIZE ([] or that size)


def check_fitnet_config(cfg: CN) -> None:
    check_weights(cfg, "FITNET")
    check_input_size(cfg, "FITNET.INPUT_SIZE")
    if cfg.FITNET.HINT_LAYER < 0:
        raise ConfigError(f"FITNET.HINT_LAYER must be >= 0 (0 = the stem), got {cfg.FITNET.HINT_LAYER}")


def hint_regressor(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Sequential:
    """Conv (or transposed conv) + BN + ReLU: [B, Cs, Hs, Ws] -> [B, Ct, Ht, Wt]; ValueError when no such conv."""
    (_, s_c, s_h, s_w), (_, t_c, t_h, t_w) = student_shape, teacher_shape
    if s_h == 2 * t_h and s_w == 2 * t_w:
        conv: nn.Module = nn.Conv2d(s_c, t_c, 3, stride=2, padding=1)
    elif 2 * s_h == t_h and 2 * s_w == t_w:
        conv = nn.ConvTranspose2d(s_c, t_c, 4, stride=2, padding=1)
    elif s_h >= t_h and s_w >= t_w:
        conv = nn.Conv2d(s_c, t_c, (1 + s_h - t_h, 1 + s_w - t_w))
    else:
        raise ValueError(f"no regressor maps a {s_h}x{s_w} student map onto a {t_h}x{t_w} teacher map")
    return nn.Sequential(conv, nn.BatchNorm2d(t_c), nn.ReLU(inplace=True))


def fitnet_loss(regressed: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the regressed student map and the teacher's hint, both [B, C, H, W]."""
    return torch.mean((regressed.float() - hint.float()) ** 2)


@DISTILLERS.register("FITNET")
class FitNetDistiller(FeatureDistiller):
    name = "FITNET"
    add_config = staticmethod(add_fitnet_config)
    check_config = staticmethod(check_fitnet_config)

    def __init__(self, student, num_classes, teacher, image_size, ce_weight=1.0, feat_weight=100.0, hint_layer=2):
        super().__init__(student, num_classes, teacher, image_size, ce_weight)
        self.feat_weight, self.hint_layer = feat_weight, hint_layer
        student_maps = [self.student_shape.stem, *self.student_shape.stages]
        teacher_maps = [self.teacher_shape.stem, *self.teacher_shape.stages]
        if hint_layer >= min(len(student_maps), len(teacher_maps)):
            raise ConfigError(
                f"FITNET.HINT_LAYER {hint_layer} is past the last stage: the student has {len(student_maps) - 1} "
                f"stages and the teacher {len(teacher_maps) - 1} (0 = the stem)"
            )
        try:
            self.regressor = hint_regressor(student_maps[hint_layer].shape, teacher_maps[hint_layer].shape)
        except ValueError as err:
            raise ConfigError(f"FITNET.HINT_LAYER {hint_layer}: {err}; pick another layer") from None

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None):
        f = cfg.FITNET
        return cls(
            student, num_classes, teacher, cfg.DATASET.IMAGE_SIZE, f.LOSS.CE_WEIGHT, f.LOSS.FEAT_WEIGHT, f.HINT_LAYER
        )

    def forward_train(self, batch):
        student, teacher = self.features(batch)
        guided = [student.stem, *student.stages][self.hint_layer]
        hint = [teacher.stem, *teacher.stages][self.hint_layer]
        return student.logits, {
            "loss_ce": self.cross_entropy(student.logits, batch),
            "loss_fitnet": self.feat_weight * fitnet_loss(self.regressor(guided), hint),
        }
