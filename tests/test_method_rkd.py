"""RKD: distance and angle terms by hand (loops over pairs and triplets), on the pooled features of a tiny pair."""

from __future__ import annotations

import math

import pytest
import torch
from distiller_helpers import SIZE, cifar_resnet_maps, fixed_batch, tiny_pair

from makd.config import ConfigError, load_cfg
from makd.distillers.rkd import RelationalDistiller, rkd_loss


def _huber(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def _rkd_by_hand(xs: torch.Tensor, xt: torch.Tensor, squared=False, eps=1e-12, wd=25.0, wa=50.0) -> float:
    def distances(x):
        rows, n = x.tolist(), len(x)
        d = [[0.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(n):
                if i != j:
                    sq = max(sum((p - q) ** 2 for p, q in zip(rows[i], rows[j])), eps)
                    d[i][j] = sq if squared else math.sqrt(sq)
        mean = sum(v for row in d for v in row if v > 0) / sum(1 for row in d for v in row if v > 0)
        return [[v / mean for v in row] for row in d]

    def angles(x):
        rows, n = x.tolist(), len(x)
        out = []
        for j in range(n):
            units = []
            for i in range(n):
                e = [p - q for p, q in zip(rows[i], rows[j])]
                norm = max(math.sqrt(sum(v * v for v in e)), 1e-12)
                units.append([v / norm for v in e])
            out += [sum(p * q for p, q in zip(units[i], units[k])) for i in range(n) for k in range(n)]
        return out

    ds, dt = distances(xs), distances(xt)
    n = len(ds)
    distance = sum(_huber(ds[i][j], dt[i][j]) for i in range(n) for j in range(n)) / n**2
    a_s, a_t = angles(xs), angles(xt)
    angle = sum(_huber(p, q) for p, q in zip(a_s, a_t)) / len(a_s)
    return wd * distance + wa * angle


@pytest.mark.parametrize("squared", [False, True])
def test_rkd_loss_by_hand(squared):
    torch.manual_seed(0)
    xs, xt = torch.randn(5, 3, dtype=torch.float64), 3 * torch.randn(5, 6, dtype=torch.float64)
    assert abs(rkd_loss(xs, xt, squared=squared).item() - _rkd_by_hand(xs, xt, squared=squared)) < 1e-6
    assert rkd_loss(2 * xt, xt).item() < 1e-6  # relations are scale-free: a scaled copy has nothing to learn


def test_rkd_distiller_and_keys():
    student, teacher = tiny_pair()
    distiller = RelationalDistiller(student, 5, teacher, SIZE, feat_weight=2.0).double().train()  # float64: to 1e-6
    batch = fixed_batch()
    batch["image"] = batch["image"].double()
    _, losses = distiller.forward_train(batch)
    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    assert abs(losses["loss_rkd"].item() - 2.0 * _rkd_by_hand(s.pooled.detach(), t.pooled)) < 1e-6
    cfg = load_cfg(None, ["DISTILLER.TYPE", "RKD"])
    assert (cfg.RKD.DISTANCE_WEIGHT, cfg.RKD.ANGLE_WEIGHT, cfg.RKD.PDIST.EPSILON, cfg.RKD.PDIST.SQUARED) == (
        25.0,
        50.0,
        1e-12,
        False,
    )
    with pytest.raises(ConfigError, match=r"^RKD.ANGLE_WEIGHT must be >= 0"):
        load_cfg(None, ["DISTILLER.TYPE", "RKD", "RKD.ANGLE_WEIGHT", "-1"])
