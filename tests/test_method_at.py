"""AT: the attention-transfer loss by hand on a fixed batch (stages of different sizes pooled), and its keys."""

from __future__ import annotations

import pytest
import torch
from distiller_helpers import SIZE, cifar_resnet_maps, cross_entropy_by_hand, fixed_batch, tiny_pair

from makd.config import ConfigError, load_cfg
from makd.distillers.at import AttentionTransferDistiller, at_loss


def _attention(f: torch.Tensor, p: float) -> torch.Tensor:
    q = (f.abs() ** p).sum(dim=1).reshape(f.shape[0], -1)  # the sum and the mean differ by C: normalised away
    return q / q.norm(dim=1, keepdim=True)


def test_at_losses_by_hand():
    student, teacher = tiny_pair("resnet8", "resnet8x4")
    distiller = AttentionTransferDistiller(student, 5, teacher, SIZE, ce_weight=0.7, feat_weight=1000.0, p=2).train()
    batch = fixed_batch()
    logits, losses = distiller.forward_train(batch)
    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    expected = sum(((_attention(a, 2) - _attention(b, 2)) ** 2).mean() for a, b in zip(s.stages, t.stages))
    assert abs(losses["loss_at"].item() - 1000.0 * expected.item()) < 1e-6 * 1000
    assert abs(losses["loss_ce"].item() - 0.7 * cross_entropy_by_hand(s.logits, batch["label"]).item()) < 1e-6


def test_larger_maps_are_average_pooled_and_stage_counts_pair_from_the_deepest():
    torch.manual_seed(0)
    big, small = torch.randn(2, 3, 8, 8).relu(), torch.randn(2, 5, 4, 4).relu()
    pooled = big.reshape(2, 3, 4, 2, 4, 2).mean(dim=(3, 5))  # 2x2 average pooling by hand
    expected = ((_attention(pooled, 2) - _attention(small, 2)) ** 2).mean()
    assert abs(at_loss([big], [small], 2).item() - expected.item()) < 1e-7
    assert abs(at_loss([small], [big], 2).item() - expected.item()) < 1e-7
    extra = torch.randn(2, 4, 16, 16).relu()  # the student has one more, shallower stage: it is left out
    assert at_loss([extra, big], [small], 2).item() == at_loss([big], [small], 2).item()
    assert abs(at_loss([big], [small], 3).item() - ((_attention(pooled, 3) - _attention(small, 3)) ** 2).mean()) < 1e-7


def test_at_keys_are_mdistillers():
    cfg = load_cfg(None, ["DISTILLER.TYPE", "AT"])
    assert (cfg.AT.P, cfg.AT.LOSS.CE_WEIGHT, cfg.AT.LOSS.FEAT_WEIGHT) == (2, 1.0, 1000.0)
    with pytest.raises(ConfigError, match=r"^AT.P must be > 0, got 0$"):
        load_cfg(None, ["DISTILLER.TYPE", "AT", "AT.P", "0"])
    with pytest.raises(ConfigError, match=r"^AT.LOSS.FEAT_WEIGHT must be >= 0"):
        load_cfg(None, ["DISTILLER.TYPE", "AT", "AT.LOSS.FEAT_WEIGHT", "-1"])


def test_at_trains_the_student_only():
    student, teacher = tiny_pair()
    distiller = AttentionTransferDistiller(student, 5, teacher, SIZE)
    assert {id(p) for p in distiller.learnable_parameters()} == {id(p) for p in student.parameters()}
    _, losses = distiller.forward_train(fixed_batch())
    losses["loss_at"].backward()
    assert student.stem[0].weight.grad is not None
