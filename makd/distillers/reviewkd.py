"""ReviewKD, knowledge review (Chen et al., CVPR 2021): the student's stages, fused from the deepest down by
attention-based fusion (ABF) modules, are matched to the teacher's stages with a hierarchical context loss (HCL).

Levels: the student's stage maps (pre-activation with REVIEWKD.STU_PREACT) and its pooled feature as a 1 x 1 map;
the teacher's pre-activation stage maps and pooled feature; paired from the deepest. Deepest first, level l's ABF
maps its student map by a 1x1 conv + BN to a middle width (min(MAX_MID_CHANNEL, the pooled width)); below the top,
the residual from the level above is resized (nearest) to this map's size and the two are mixed by a 2-channel
sigmoid attention from a 1x1 conv over both; the result (resized to the teacher's size at that level when it
differs) is the residual passed down, and a 3x3 conv + BN of it to the teacher's width is the level's output.
HCL per level: MSE(out, t) plus the MSEs of both average-pooled to 4x4, 2x2, 1x1 (sizes below the map's), weighted
1/2, 1/4, 1/8 and divided by the sum of the weights. loss_ce = REVIEWKD.CE_WEIGHT x CE; loss_reviewkd =
REVIEWKD_WEIGHT x min(epoch / WARMUP_EPOCHS, 1) (1-based epoch) x sum over levels. Keys and defaults are mdistiller's;
SHAPES, OUT_SHAPES (sizes, deepest first) and IN_CHANNELS, OUT_CHANNELS (widths, shallowest first) are read from the
networks when empty, and checked against them when given.
Differs from mdistiller: REVIEWKD.MAX_MID_CHANNEL caps the middle width, as its name says (mdistiller ignores the key
and always caps at 512; the default 512 gives the same modules).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS, linear_warmup, warmed_up_weights
from makd.distillers.feature_methods import FeatureDistiller, check_online_teacher, paired_stages
from makd.errors import ConfigError


def add_reviewkd_config(cfg: CN) -> None:
    if "REVIEWKD" in cfg:
        return
    group = CN()
    group.CE_WEIGHT = 1.0  # weight of the class cross-entropy
    group.REVIEWKD_WEIGHT = 1.0  # weight of the review term
    group.WARMUP_EPOCHS = 20  # the review term ramps as min(epoch / WARMUP_EPOCHS, 1), 1-based epoch
    group.SHAPES = []  # student map sizes, deepest (the pooled 1) first; [] = from the networks
    group.OUT_SHAPES = []  # teacher map sizes, deepest first; [] = from the networks
    group.IN_CHANNELS = []  # student widths, shallowest first, the pooled last; [] = from the networks
    group.OUT_CHANNELS = []  # teacher widths, same order; [] = from the networks
    group.MAX_MID_CHANNEL = 512  # cap of the ABF modules' middle width
    group.STU_PREACT = False  # fuse the student's pre-activation maps instead of its stage outputs
    cfg.REVIEWKD = group


def check_reviewkd_config(cfg: CN) -> None:
    r = cfg.REVIEWKD
    for key in ("CE_WEIGHT", "REVIEWKD_WEIGHT"):
        if r[key] < 0:
            raise ConfigError(f"REVIEWKD.{key} must be >= 0, got {r[key]}")
    if r.WARMUP_EPOCHS < 0 or r.MAX_MID_CHANNEL < 1:
        raise ConfigError("REVIEWKD.WARMUP_EPOCHS must be >= 0 and REVIEWKD.MAX_MID_CHANNEL >= 1")
    check_online_teacher(cfg)


class AttentionFusion(nn.Module):
    """One ABF: [B, Cin, h, w] (+ the residual from the level above) -> (output [B, Cout, H, W], residual)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.expand = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.attention = (
            nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        )  # weights of this level and of the residual, per position
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.expand[0].weight, a=1)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None, out_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.reduce(x)
        if self.attention is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            weights = self.attention(torch.cat([x, residual], dim=1))
            x = x * weights[:, 0:1] + residual * weights[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.expand(x), x


def hierarchical_context_loss(outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Sum over levels of the weighted MSEs at full size and pooled to 4, 2, 1 (sizes below the map's)."""
    total = 0.0
    for out, target in zip(outputs, targets):
        out, target = out.float(), target.float()
        loss, weight, weights = F.mse_loss(out, target), 1.0, 1.0
        for size in (4, 2, 1):
            if size >= out.shape[2]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(out, size), F.adaptive_avg_pool2d(target, size))
            weights += weight
        total = total + loss / weights
    return total


@DISTILLERS.register("REVIEWKD")
class ReviewDistiller(FeatureDistiller):
    name = "REVIEWKD"
    teacher_preact = True
    add_config = staticmethod(add_reviewkd_config)
    check_config = staticmethod(check_reviewkd_config)
    loss_weight_keys = {"loss_ce": "REVIEWKD.CE_WEIGHT", "loss_reviewkd": "REVIEWKD.REVIEWKD_WEIGHT"}

    def __init__(
        self,
        student,
        num_classes,
        teacher,
        image_size,
        ce_weight=1.0,
        review_weight=1.0,
        warmup_epochs=20,
        max_mid_channel=512,
        student_preact=False,
        declared: dict | None = None,
    ):
        self.student_preact = student_preact  # read by FeatureDistiller.__init__ (which maps to extract)
        super().__init__(student, num_classes, teacher, image_size, ce_weight)
        self.review_weight, self.warmup_epochs = review_weight, warmup_epochs
        s_levels = self._levels(self.student_shape, student_preact)
        t_levels = self._levels(self.teacher_shape, True)
        pairs = paired_stages(s_levels, t_levels)
        measured = {
            "IN_CHANNELS": [s.shape[1] for s, _ in pairs],
            "OUT_CHANNELS": [t.shape[1] for _, t in pairs],
            "SHAPES": [s.shape[-1] for s, _ in reversed(pairs)],
            "OUT_SHAPES": [t.shape[-1] for _, t in reversed(pairs)],
        }
        for key, value in (declared or {}).items():
            if value and list(value) != measured[key]:
                raise ConfigError(
                    f"REVIEWKD.{key} is {list(value)} but the student/teacher pair gives {measured[key]}; set it to "
                    "that or [] (read from the networks)"
                )
        mid = min(max_mid_channel, measured["IN_CHANNELS"][-1])
        count = len(pairs)
        # deepest first: the pooled level has no residual to fuse
        self.fusions = nn.ModuleList(
            AttentionFusion(s.shape[1], mid, t.shape[1], fuse=level < count - 1)
            for level, (s, t) in reversed(list(enumerate(pairs)))
        )

    @staticmethod
    def _levels(features, preact: bool) -> list[torch.Tensor]:
        maps = features.preact if preact else features.stages
        return [*maps, features.pooled[:, :, None, None]]

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None):
        r = cfg.REVIEWKD
        declared = {key: r[key] for key in ("IN_CHANNELS", "OUT_CHANNELS", "SHAPES", "OUT_SHAPES")}
        return cls(
            student,
            num_classes,
            teacher,
            cfg.DATASET.IMAGE_SIZE,
            r.CE_WEIGHT,
            r.REVIEWKD_WEIGHT,
            r.WARMUP_EPOCHS,
            r.MAX_MID_CHANNEL,
            r.STU_PREACT,
            declared,
        )

    def loss_weights(self) -> dict[str, tuple[float, str]]:
        """The review term's weight times this epoch's warm-up factor, named in its key (as DKD's)."""
        return warmed_up_weights(super().loss_weights(), ("loss_reviewkd",), self.warmup_factor())

    def warmup_factor(self) -> float:
        return linear_warmup(self.epoch + 1, self.warmup_epochs)

    def forward_train(self, batch):
        student, teacher = self.features(batch)
        pairs = paired_stages(self._levels(student, self.student_preact), self._levels(teacher, True))
        outputs, residual = [], None
        for fusion, (s, t) in zip(self.fusions, reversed(pairs)):
            out, residual = fusion(s, residual, tuple(t.shape[-2:]))
            outputs.append(out)
        targets = [t for _, t in reversed(pairs)]
        term = self.review_weight * self.warmup_factor() * hierarchical_context_loss(outputs, targets)
        return student.logits, {"loss_ce": self.cross_entropy(student.logits, batch), "loss_reviewkd": term}
