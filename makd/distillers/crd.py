"""CRD, contrastive representation distillation (Tian et al., ICLR 2020): a noise-contrastive bound on the mutual
information between the student's and the teacher's pooled features, with a memory bank over the training set.

Embeddings: e_s = normalise(W_s z_s), e_t = normalise(W_t z_t), z the pooled features, W linear maps to
CRD.FEAT.DIM. The memory holds one student and one teacher embedding per training image (batch["index"]), started
uniform in +-1/sqrt(DIM/3). For each image, CRD.NCE.K negatives are drawn uniformly (with replacement) from the
images of the other classes, and the positive is the image itself (CRD.MODE "exact") or a random image of its class
("relax"). Scores: P = exp(<e, m> / T) / Z against the other network's memory rows m (T = CRD.NCE.TEMPERATURE;
Z = N x the mean score of the first batch, fixed from then on). The NCE loss of each side, with noise probability
1/N: -(sum log(P_pos / (P_pos + K/N)) + sum log((K/N) / (P_neg + K/N))) / B; loss_crd = CRD.LOSS.FEAT_WEIGHT x
(student side + teacher side), loss_ce = CRD.LOSS.CE_WEIGHT x CE. After scoring, each image's memory rows move to
normalise(momentum x m + (1 - momentum) x e) (CRD.NCE.MOMENTUM). Keys and defaults are mdistiller's;
CRD.FEAT.STUDENT_DIM / TEACHER_DIM are the pooled widths (0: read from the networks; a value given must match).
The embeddings are optimised; the memory and Z are buffers: checkpointed, so a resumed run continues exactly.
SOLVER.TRAINER "crd" (mdistiller's sampling loader) is the base trainer here: the distiller draws its own indices.
Differs from mdistiller: negatives are drawn with replacement (mdistiller draws without when a class has enough
negatives; for K much smaller than N the two are the same draw in distribution up to repeats).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS
from makd.distillers.feature_methods import FeatureDistiller, add_weights_group, check_weights
from makd.errors import ConfigError

CRD_MODES = ("exact", "relax")
EPSILON = 1e-7


def add_crd_config(cfg: CN) -> None:
    if "CRD" in cfg:
        return
    group = add_weights_group(cfg, "CRD", ce_weight=1.0, feat_weight=0.8)
    group.MODE = "exact"  # positive: "exact" the image itself, "relax" a random image of the same class
    group.FEAT = CN()
    group.FEAT.DIM = 128  # embedding width
    group.FEAT.STUDENT_DIM = 0  # the student's pooled width (0: read from the network; a value given must match)
    group.FEAT.TEACHER_DIM = 0  # the teacher's pooled width (same rule)
    group.NCE = CN()
    group.NCE.K = 16384  # negatives per image and step
    group.NCE.MOMENTUM = 0.5  # memory update: m <- normalise(momentum m + (1 - momentum) e)
    group.NCE.TEMPERATURE = 0.07


def check_crd_config(cfg: CN) -> None:
    check_weights(cfg, "CRD")
    c = cfg.CRD
    if c.MODE not in CRD_MODES:
        raise ConfigError(f"CRD.MODE {c.MODE!r} is unknown; use one of {', '.join(CRD_MODES)}")
    if c.FEAT.DIM < 1 or c.NCE.K < 1:
        raise ConfigError(f"CRD.FEAT.DIM and CRD.NCE.K must be >= 1, got {c.FEAT.DIM} and {c.NCE.K}")
    if c.FEAT.STUDENT_DIM < 0 or c.FEAT.TEACHER_DIM < 0:
        raise ConfigError("CRD.FEAT.STUDENT_DIM and TEACHER_DIM must be >= 0 (0: read from the networks)")
    if not 0.0 <= c.NCE.MOMENTUM < 1.0 or c.NCE.TEMPERATURE <= 0:
        raise ConfigError(
            f"CRD.NCE.MOMENTUM must be in [0, 1) and CRD.NCE.TEMPERATURE > 0, got {c.NCE.MOMENTUM}, {c.NCE.TEMPERATURE}"
        )


class Embedding(nn.Module):
    """[B, D] -> [B, dim]: a Linear map, then L2 normalisation."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1).float()), dim=1)


def nce_loss(scores: torch.Tensor, num_data: int) -> torch.Tensor:
    """[B, 1 + K] scores (positive first) -> -(sum log D1 + sum log D0) / B with noise probability 1 / N."""
    k = scores.shape[1] - 1
    noise = k / num_data
    positive, negative = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(positive / (positive + noise + EPSILON))
    log_d0 = torch.log(noise / (negative + noise + EPSILON))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


class ContrastiveSampler:
    """Draws, for images of known labels, a positive and K negatives from the other classes, uniformly.

    The training labels are sorted by class once: class c occupies positions [start_c, start_c + n_c) of `order`, and
    a negative is position u (u < N - n_c) shifted past that range, an exact uniform draw over the other classes.
    """

    def __init__(self, labels: list[int]) -> None:
        labels_t = torch.as_tensor(labels, dtype=torch.long)
        self.labels = labels_t
        self.order = torch.argsort(labels_t, stable=True)
        num_classes = int(labels_t.max()) + 1 if len(labels_t) else 0
        self.counts = torch.bincount(labels_t, minlength=num_classes)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        if len(labels_t) and int(self.counts.max()) == len(labels_t):
            raise ConfigError("DISTILLER.TYPE CRD draws negatives from the other classes, but the training set has one")

    def to(self, device: torch.device) -> ContrastiveSampler:
        for name in ("labels", "order", "counts", "starts"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def draw(self, index: torch.Tensor, k: int, mode: str) -> torch.Tensor:
        """[B] image indices -> [B, 1 + k]: the positive, then k negatives (torch's global generator)."""
        labels = self.labels[index]
        count, start = self.counts[labels], self.starts[labels]
        n = len(self.labels)
        u = (torch.rand(len(index), k, device=index.device) * (n - count)[:, None]).long()
        position = torch.where(u < start[:, None], u, u + count[:, None])
        negatives = self.order[position]
        if mode == "exact":
            positive = index
        else:
            offset = (torch.rand(len(index), device=index.device) * count).long()
            positive = self.order[start + offset]
        return torch.cat([positive[:, None], negatives], dim=1)


@DISTILLERS.register("CRD")
class ContrastiveDistiller(FeatureDistiller):
    name = "CRD"
    needs_train_labels = True
    add_config = staticmethod(add_crd_config)
    check_config = staticmethod(check_crd_config)

    def __init__(
        self,
        student,
        num_classes,
        teacher,
        image_size,
        train_labels: list[int],
        ce_weight=1.0,
        feat_weight=0.8,
        dim=128,
        k=16384,
        momentum=0.5,
        temperature=0.07,
        mode="exact",
        declared_dims=(0, 0),
    ):
        super().__init__(student, num_classes, teacher, image_size, ce_weight)
        self.feat_weight, self.k, self.momentum, self.temperature, self.mode = (
            feat_weight,
            k,
            momentum,
            temperature,
            mode,
        )
        widths = (self.student_shape.pooled.shape[1], self.teacher_shape.pooled.shape[1])
        for key, declared, found, who in zip(
            ("STUDENT_DIM", "TEACHER_DIM"), declared_dims, widths, ("student", "teacher")
        ):
            if declared and declared != found:
                raise ConfigError(
                    f"CRD.FEAT.{key} is {declared} but the {who}'s pooled feature has {found}; set {found} (or 0)"
                )
        self.embed_student = Embedding(widths[0], dim)
        self.embed_teacher = Embedding(widths[1], dim)
        self.num_data = len(train_labels)
        self.sampler = ContrastiveSampler(train_labels)
        bound = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory_student", torch.rand(self.num_data, dim) * 2 * bound - bound)
        self.register_buffer("memory_teacher", torch.rand(self.num_data, dim) * 2 * bound - bound)
        self.register_buffer("normalizers", torch.full((2,), -1.0))  # Z of the student and the teacher side

    @classmethod
    def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None, train_labels=None):
        c = cfg.CRD
        return cls(
            student,
            num_classes,
            teacher,
            cfg.DATASET.IMAGE_SIZE,
            train_labels,
            c.LOSS.CE_WEIGHT,
            c.LOSS.FEAT_WEIGHT,
            c.FEAT.DIM,
            c.NCE.K,
            c.NCE.MOMENTUM,
            c.NCE.TEMPERATURE,
            c.MODE,
            (c.FEAT.STUDENT_DIM, c.FEAT.TEACHER_DIM),
        )

    def _scores(self, anchor: torch.Tensor, memory: torch.Tensor, idx: torch.Tensor, side: int) -> torch.Tensor:
        """exp(<anchor, memory[idx]> / T) / Z: [B, 1 + K]; Z is fixed from the first batch (N x its mean score)."""
        rows = memory[idx.flatten()].view(idx.shape[0], idx.shape[1], -1)  # [B, 1 + K, dim]
        scores = torch.exp(torch.bmm(rows, anchor[:, :, None]).squeeze(2) / self.temperature)
        if self.normalizers[side] < 0:
            self.normalizers[side] = scores.detach().mean() * self.num_data
        return scores / self.normalizers[side].clone()  # a copy: the buffer's other entry is set in place later

    @torch.no_grad()
    def _update(self, memory: torch.Tensor, index: torch.Tensor, embedding: torch.Tensor) -> None:
        moved = memory[index] * self.momentum + embedding.detach() * (1 - self.momentum)
        memory[index] = F.normalize(moved, dim=1)

    def forward_train(self, batch):
        student, teacher = self.features(batch)
        index = batch["index"].to(self.memory_student.device).long()
        if self.sampler.labels.device != index.device:
            self.sampler.to(index.device)
        idx = self.sampler.draw(index, self.k, self.mode)
        e_s, e_t = self.embed_student(student.pooled), self.embed_teacher(teacher.pooled)
        # the student's embedding against the teacher's memory, and the teacher's against the student's
        scores_s = self._scores(e_s, self.memory_teacher, idx, 0)
        scores_t = self._scores(e_t, self.memory_student, idx, 1)
        self._update(self.memory_student, index, e_s)
        self._update(self.memory_teacher, index, e_t)
        term = nce_loss(scores_s, self.num_data) + nce_loss(scores_t, self.num_data)
        return student.logits, {
            "loss_ce": self.cross_entropy(student.logits, batch),
            "loss_crd": self.feat_weight * term,
        }
