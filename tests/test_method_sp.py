"""SP: the similarity-preserving loss by hand (loops over sample pairs), on the last stage of a tiny pair."""

from __future__ import annotations

import math

import torch
from distiller_helpers import SIZE, cifar_resnet_maps, cross_entropy_by_hand, fixed_batch, tiny_pair

from makd.config import load_cfg
from makd.distillers.sp import SimilarityPreservingDistiller, sp_loss


def _sp_by_hand(fs: torch.Tensor, ft: torch.Tensor) -> float:
    b = fs.shape[0]
    a, c = fs.reshape(b, -1).tolist(), ft.reshape(b, -1).tolist()

    def rows(x):
        g = [[sum(p * q for p, q in zip(x[i], x[j])) for j in range(b)] for i in range(b)]
        return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in g]

    gs, gt = rows(a), rows(c)
    return sum((gt[i][j] - gs[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2


def test_sp_loss_by_hand_on_small_maps():
    torch.manual_seed(0)
    fs, ft = torch.randn(4, 2, 3, 3), torch.randn(4, 5, 2, 2)  # any shapes but the batch
    assert abs(sp_loss(fs, ft).item() - _sp_by_hand(fs, ft)) < 1e-6


def test_sp_distiller_uses_the_last_stage():
    student, teacher = tiny_pair()
    distiller = SimilarityPreservingDistiller(student, 5, teacher, SIZE, ce_weight=1.0, feat_weight=3000.0).train()
    batch = fixed_batch()
    _, losses = distiller.forward_train(batch)
    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    assert abs(losses["loss_sp"].item() - 3000.0 * _sp_by_hand(s.stages[-1].detach(), t.stages[-1])) < 3000.0 * 1e-6
    assert abs(losses["loss_ce"].item() - cross_entropy_by_hand(s.logits, batch["label"]).item()) < 1e-6
    cfg = load_cfg(None, ["DISTILLER.TYPE", "SP"])
    assert (cfg.SP.LOSS.CE_WEIGHT, cfg.SP.LOSS.FEAT_WEIGHT) == (1.0, 3000.0)
