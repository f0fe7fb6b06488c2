"""NST: the squared MMD of the channels' spatial patterns by hand (loops over channel pairs) on a tiny pair."""

from __future__ import annotations

import math

import torch
from distiller_helpers import SIZE, cifar_resnet_maps, fixed_batch, tiny_pair

from makd.config import load_cfg
from makd.distillers.nst import NeuronSelectivityDistiller, nst_loss


def _mmd_by_hand(fs: torch.Tensor, ft: torch.Tensor) -> float:
    total = 0.0
    for b in range(fs.shape[0]):

        def channels(f, b=b):
            rows = f[b].reshape(f.shape[1], -1).tolist()
            return [[v / max(math.sqrt(sum(w * w for w in r)), 1e-12) for v in r] for r in rows]  # a dead channel: 0

        s, t = channels(fs), channels(ft)

        def k(a, c):
            return sum(p * q for p, q in zip(a, c)) ** 2

        tt = sum(k(x, y) for x in t for y in t) / len(t) ** 2
        ss = sum(k(x, y) for x in s for y in s) / len(s) ** 2
        st = sum(k(x, y) for x in s for y in t) / (len(s) * len(t))
        total += tt + ss - 2 * st
    return total / fs.shape[0]


def test_nst_loss_by_hand_with_pooling():
    torch.manual_seed(0)
    fs, ft = torch.rand(2, 3, 4, 4), torch.rand(2, 5, 2, 2)
    pooled = fs.reshape(2, 3, 2, 2, 2, 2).mean(dim=(3, 5))
    assert abs(nst_loss([fs], [ft]).item() - _mmd_by_hand(pooled, ft)) < 1e-6


def test_nst_distiller_over_the_stages():
    student, teacher = tiny_pair()
    distiller = NeuronSelectivityDistiller(student, 5, teacher, SIZE, feat_weight=50.0).train()
    batch = fixed_batch(batch_size=3)
    _, losses = distiller.forward_train(batch)
    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    expected = sum(_mmd_by_hand(a.detach(), b) for a, b in zip(s.stages, t.stages))
    assert abs(losses["loss_nst"].item() - 50.0 * expected) < 50.0 * 1e-6
    assert load_cfg(None, ["DISTILLER.TYPE", "NST"]).NST.LOSS.FEAT_WEIGHT == 50.0
