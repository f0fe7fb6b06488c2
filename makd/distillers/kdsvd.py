"""KDSVD (Lee et al., ECCV 2018, self-supervised KD with singular value decomposition): the relation between
consecutive stages, seen through each stage's leading singular vectors, is what the student learns.

Per stage, a map [B, C, H, W] is read as X [B, H x W, C] and decomposed, X = U S V^T; the first k right singular
vectors V [B, C, k] (k = KDSVD.K for the teacher, k + 3 for the student), the first k singular values S and U are
each L2-normalised (V and U over their rows, S over the k values), non-finite entries set to 0. The student's
vectors are matched to the teacher's: for each teacher vector the student vector of largest |cosine| is taken, with
that cosine's sign; a teacher vector's sign is fixed so that its largest-magnitude entry is positive (a singular
vector's sign is arbitrary, and the loss depends on it across stages). Both are weighted by the teacher's singular
values. For consecutive stages (l - 1, l) the RBF kernel exp(-(v_l[c] - v_{l-1}[c'])^2 / 8) over every pair of
channel entries (c, c') and vector is compared:
loss_kdsvd = KDSVD.LOSS.FEAT_WEIGHT x sum over l of sum((K_s - K_t)^2) / B (non-finite entries 0), loss_ce =
KDSVD.LOSS.CE_WEIGHT x CE. Keys and defaults are mdistiller's. Student and teacher stages must have as many channels
(the matched vectors live in channel space), as in the paper's pairs and the shipped resnet32x4 -> resnet8x4.
Differs from mdistiller: X is [B, H x W, C] as in the paper (the authors' NHWC TensorFlow reshape); mdistiller views
NCHW maps as [B, C x H, W], so its singular vectors run over image columns. Gradients through degenerate singular
vectors (repeated or zero singular values) are non-finite; they are set to 0 on the way back, as the loss entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS
from makd.distillers.feature_methods import FeatureDistiller, add_weights_group, check_weights, paired_stages
from makd.distillers.losses import wide_float
from makd.errors import ConfigError

EXTRA_STUDENT_VECTORS = 3  # the student keeps k + 3 vectors so that each teacher vector finds a match
RBF_SCALE = 8.0  # exp(-d^2 / 8): the authors' kernel width


def add_kdsvd_config(cfg: CN) -> None:
    if "KDSVD" in cfg:
        return
    group = add_weights_group(cfg, "KDSVD", ce_weight=1.0, feat_weight=1.0)
    group.K = 1  # singular vectors of the teacher compared per stage


def check_kdsvd_config(cfg: CN) -> None:
    check_weights(cfg, "KDSVD")
    if cfg.KDSVD.K < 1:
        raise ConfigError(f"KDSVD.K must be >= 1, got {cfg.KDSVD.K}")


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _zero_nonfinite_gradient(x: torch.Tensor) -> torch.Tensor:
    if x.requires_grad:
        x.register_hook(_finite)
    return x


def truncated_svd(feature: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U [B, HW, k], S [B, k], V [B, C, k]) of the map [B, C, H, W] read as [B, H x W, C], each normalised."""
    x = _zero_nonfinite_gradient(wide_float(feature).flatten(2).transpose(1, 2))
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    v = vh.transpose(1, 2)
    u, s, v = _finite(u[:, :, :k]), _finite(s[:, :k]), _finite(v[:, :, :k])
    return F.normalize(u, dim=1), F.normalize(s, dim=1), F.normalize(v, dim=1)


def fix_signs(v: torch.Tensor) -> torch.Tensor:
    """[B, C, k] with each vector's sign chosen so that its largest-magnitude entry is positive.

    A singular vector is defined up to its sign, and the RBF of two stages' vectors depends on their relative signs:
    without a convention the loss would depend on the SVD routine (LAPACK, cuSOLVER) that happened to run.
    """
    largest = v.gather(1, v.abs().argmax(dim=1, keepdim=True))
    return v * torch.where(largest < 0, -1.0, 1.0)


def align_to_teacher(student_v: torch.Tensor, teacher_v: torch.Tensor) -> torch.Tensor:
    """[B, C, k + 3], [B, C, k] -> [B, C, k]: for each teacher vector, the student vector of largest |cosine|,
    signed like that cosine."""
    cosine = student_v.transpose(1, 2) @ teacher_v  # [B, k + 3, k]
    best = cosine.abs().amax(dim=1, keepdim=True)
    selection = torch.where(cosine.abs() == best, torch.sign(cosine), torch.zeros_like(cosine))
    return student_v @ selection


def _rbf(v: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """[B, C_l, k], [B, C_{l-1}, k] -> [B, C_l, C_{l-1}, k]."""
    return torch.exp(-((v[:, :, None, :] - previous[:, None, :, :]) ** 2) / RBF_SCALE)


def kdsvd_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor], k: int) -> torch.Tensor:
    """The KDSVD term (see the module docstring) over consecutive paired stages."""
    total, previous = 0.0, None
    for f_s, f_t in paired_stages(student_maps, teacher_maps):
        _, s_t, v_t = truncated_svd(f_t.detach(), k)
        v_t = fix_signs(v_t)
        _, _, v_s = truncated_svd(f_s, k + EXTRA_STUDENT_VECTORS)
        v_s = align_to_teacher(v_s, v_t) * s_t[:, None, :]
        v_t = v_t * s_t[:, None, :]
        if previous is not None:
            gap = (_rbf(v_s, previous[0]) - _rbf(v_t, previous[1]).detach()) ** 2
            total = total + _finite(gap).sum()
        previous = (v_s, v_t)
    return total / student_maps[0].shape[0]


@DISTILLERS.register("KDSVD")
class SingularVectorDistiller(FeatureDistiller):
    name = "KDSVD"
    add_config = staticmethod(add_kdsvd_config)
    check_config = staticmethod(check_kdsvd_config)

    def __init__(self, student, num_classes, teacher, image_size, ce_weight=1.0, feat_weight=1.0, k=1):
        super().__init__(student, num_classes, teacher, image_size, ce_weight)
        self.feat_weight, self.k = feat_weight, k
        for stage, (s, t) in enumerate(paired_stages(self.student_shape.stages, self.teacher_shape.stages)):
            if s.shape[1] != t.shape[1]:
                raise ConfigError(
                    f"DISTILLER.TYPE KDSVD compares singular vectors over channels, but paired stage {stage + 1} has "
                    f"{s.shape[1]} student and {t.shape[1]} teacher channels; use a pair of equal stage widths "
                    "(e.g. resnet32x4 -> resnet8x4)"
                )
            if k + EXTRA_STUDENT_VECTORS > min(s.shape[1], s.shape[2] * s.shape[3]):
                raise ConfigError(
                    f"KDSVD.K {k}: paired stage {stage + 1} ({s.shape[1]} x {s.shape[2]} x {s.shape[3]}) has fewer "
                    f"than K + 3 = {k + EXTRA_STUDENT_VECTORS} singular vectors; lower KDSVD.K"
                )

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None):
        d = cfg.KDSVD
        return cls(student, num_classes, teacher, cfg.DATASET.IMAGE_SIZE, d.LOSS.CE_WEIGHT, d.LOSS.FEAT_WEIGHT, d.K)

    def forward_train(self, batch):
        student, teacher = self.features(batch)
        return student.logits, {
            "loss_ce": self.cross_entropy(student.logits, batch),
            "loss_kdsvd": self.feat_weight * kdsvd_loss(student.stages, teacher.stages, self.k),
        }
