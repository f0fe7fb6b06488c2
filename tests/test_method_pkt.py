"""PKT: the probabilistic knowledge-transfer loss by hand (loops), on the pooled features of a tiny pair."""

from __future__ import annotations

import math

import torch
from distiller_helpers import SIZE, cifar_resnet_maps, fixed_batch, tiny_pair

from makd.config import load_cfg
from makd.distillers.pkt import ProbabilisticTransferDistiller, pkt_loss


def _pkt_by_hand(zs: torch.Tensor, zt: torch.Tensor, eps: float = 1e-7) -> float:
    def probabilities(z):
        rows = z.tolist()
        unit = [[v / (math.sqrt(sum(w * w for w in r)) + eps) for v in r] for r in rows]
        k = [[(sum(p * q for p, q in zip(a, b)) + 1) / 2 for b in unit] for a in unit]
        return [[v / sum(row) for v in row] for row in k]

    ps, pt = probabilities(zs), probabilities(zt)
    n = len(ps)
    return sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(n) for j in range(n)) / n**2


def test_pkt_loss_by_hand_on_small_features():
    torch.manual_seed(0)
    zs, zt = torch.randn(5, 3), torch.randn(5, 7)
    assert abs(pkt_loss(zs, zt).item() - _pkt_by_hand(zs, zt)) < 1e-7
    assert pkt_loss(zt, zt).item() == 0.0  # identical relations: nothing to transfer


def test_pkt_distiller_reads_the_pooled_features():
    student, teacher = tiny_pair()
    distiller = ProbabilisticTransferDistiller(student, 5, teacher, SIZE, feat_weight=30000.0).train()
    batch = fixed_batch()
    _, losses = distiller.forward_train(batch)
    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    assert abs(losses["loss_pkt"].item() - 30000.0 * _pkt_by_hand(s.pooled.detach(), t.pooled)) < 30000.0 * 1e-7
    assert load_cfg(None, ["DISTILLER.TYPE", "PKT"]).PKT.LOSS.FEAT_WEIGHT == 30000.0
