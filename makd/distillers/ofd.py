"""OFD, overhaul of feature distillation (Heo et al., ICCV 2019): distil the pre-ReLU maps through a margin ReLU on
the teacher side, a conv + BN connector on the student side and a partial L2 distance.

Per paired stage (pre-activation maps; the teacher's average-pooled to the student's size): the student map goes
through its connector (a KERNEL_SIZE conv to the teacher's channels, then BatchNorm). The teacher's side is the
margin ReLU max(t, m_c), m_c = E[x | x < 0] for x ~ N(beta_c, |gamma_c|^2) of the BatchNorm that produces the map
(m_c = beta - |gamma| phi(beta/|gamma|) / Phi(-beta/|gamma|); -3 |gamma| when Phi(-beta/|gamma|) <= 0.001).
The partial L2 distance leaves out the entries where the student is below a non-positive target:
d = sum over C, H, W of (max(t, m) - s)^2 except where s <= max(t, m) <= 0, averaged over the batch; stage i of n
weighs 1 / 2^(n - i) (the deepest 1). loss_ce = OFD.LOSS.CE_WEIGHT x CE; loss_ofd = OFD.LOSS.FEAT_WEIGHT x sum.
Keys and defaults are mdistiller's.
Differs from mdistiller: the teacher stays frozen in eval mode, as for every method here; mdistiller's OFD puts the
teacher in training mode, so its BatchNorm normalises with each batch's statistics and its running statistics drift.
The margins are recomputed from the teacher's file at every start (they are not stored in checkpoints).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS
from makd.distillers.feature_methods import FeatureDistiller, add_weights_group, check_weights, paired_stages
from makd.errors import ConfigError
from makd.models.features import FeatureError


def add_ofd_config(cfg: CN) -> None:
    if "OFD" in cfg:
        return
    group = add_weights_group(cfg, "OFD", ce_weight=1.0, feat_weight=0.001)
    group.CONNECTOR = CN()
    group.CONNECTOR.KERNEL_SIZE = 1  # the student connector's conv kernel (odd; "same" padding)


def check_ofd_config(cfg: CN) -> None:
    check_weights(cfg, "OFD")
    size = cfg.OFD.CONNECTOR.KERNEL_SIZE
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"OFD.CONNECTOR.KERNEL_SIZE must be an odd number >= 1, got {size}")


def margins_from_batchnorm(norm: nn.BatchNorm2d) -> torch.Tensor:
    """[C]: E[x | x < 0] of x ~ N(beta, |gamma|^2) per channel (-3 |gamma| when P(x < 0) <= 0.001)."""
    std = norm.weight.detach().double().abs()
    mean = norm.bias.detach().double()
    z = mean / std
    below = 0.5 * torch.erfc(z / math.sqrt(2.0))  # Phi(-beta / |gamma|)
    density = torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    conditional = mean - std * density / below.clamp_min(1e-300)
    return torch.where(below > 0.001, conditional, -3 * std).float()


def partial_l2(student: torch.Tensor, teacher: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """sum over C, H, W of the partial L2 distance between student and margin-ReLU(teacher), mean over the batch."""
    target = torch.maximum(teacher.float(), margin.view(1, -1, 1, 1))
    student = student.float()
    counted = ~((student <= target) & (target <= 0))
    return ((target - student) ** 2 * counted).sum() / student.shape[0]


def connector(student_channels: int, teacher_channels: int, kernel_size: int) -> nn.Sequential:
    conv = nn.Conv2d(student_channels, teacher_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel_size * kernel_size * teacher_channels)))
    return nn.Sequential(conv, nn.BatchNorm2d(teacher_channels))


@DISTILLERS.register("OFD")
class OverhaulDistiller(FeatureDistiller):
    name = "OFD"
    student_preact = True
    teacher_preact = True
    add_config = staticmethod(add_ofd_config)
    check_config = staticmethod(check_ofd_config)

    def __init__(self, student, num_classes, teacher, image_size, ce_weight=1.0, feat_weight=0.001, kernel_size=1):
        super().__init__(student, num_classes, teacher, image_size, ce_weight)
        self.feat_weight = feat_weight
        pairs = paired_stages(self.student_shape.preact, self.teacher_shape.preact)
        self.connectors = nn.ModuleList(connector(s.shape[1], t.shape[1], kernel_size) for s, t in pairs)
        try:
            norms = self._teacher_features.norms()
        except FeatureError as err:
            raise ConfigError(f"DISTILLER.TYPE OFD: teacher {err}") from None
        self.num_margins = len(pairs)
        for i, norm in enumerate(norms[len(norms) - len(pairs) :]):
            # Not persistent: recomputed from the teacher at every start, like the teacher itself.
            self.register_buffer(f"margin_{i}", margins_from_batchnorm(norm), persistent=False)

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None):
        o = cfg.OFD
        return cls(
            student,
            num_classes,
            teacher,
            cfg.DATASET.IMAGE_SIZE,
            o.LOSS.CE_WEIGHT,
            o.LOSS.FEAT_WEIGHT,
            o.CONNECTOR.KERNEL_SIZE,
        )

    def margins(self) -> list[torch.Tensor]:
        return [getattr(self, f"margin_{i}") for i in range(self.num_margins)]

    def forward_train(self, batch):
        student, teacher = self.features(batch)
        pairs = paired_stages(student.preact, teacher.preact)
        total, count = 0.0, len(pairs)
        for i, ((f_s, f_t), conv, margin) in enumerate(zip(pairs, self.connectors, self.margins())):
            s = conv(f_s)
            t = F.adaptive_avg_pool2d(f_t, s.shape[-2:])
            total = total + partial_l2(s, t, margin) / 2 ** (count - i - 1)
        return student.logits, {
            "loss_ce": self.cross_entropy(student.logits, batch),
            "loss_ofd": self.feat_weight * total,
        }
