"""Loss functions against hand-computed values, and the distillers' contract."""

from __future__ import annotations

import math

import pytest
import torch

from makd.config import load_cfg
from makd.distillers import build_distiller
from makd.distillers.losses import aspect_bce, class_cross_entropy, makd_losses, soften_targets


def test_soften_targets_identity_and_hand_values():
    p = torch.tensor([0.1, 0.5, 0.7363, 0.99])
    assert torch.equal(soften_targets(p, 1.0), p)
    # T = 2: sigmoid(logit(0.9)/2) = 3/4 exactly (odds 9 -> 3)
    assert soften_targets(torch.tensor([0.9]), 2.0).item() == pytest.approx(0.75, abs=1e-6)
    # T = 0.5 sharpens: odds 3 -> 9
    assert soften_targets(torch.tensor([0.75]), 0.5).item() == pytest.approx(0.9, abs=1e-6)
    assert soften_targets(torch.tensor([0.5]), 3.0).item() == pytest.approx(0.5)
    hard = soften_targets(torch.tensor([0.0, 1.0]), 2.0)
    assert torch.isfinite(hard).all() and hard[0] < 0.01 and hard[1] > 0.99


def test_cross_entropy_hand_value():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert class_cross_entropy(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def test_aspect_bce_hand_value():
    # BCE(sigmoid(0) = 0.5, t) = log 2 for any t; BCE(logit 2, t = 1) = log(1 + e^-2)
    assert aspect_bce(torch.zeros(2, 3), torch.rand(2, 3)).item() == pytest.approx(math.log(2), rel=1e-6)
    assert aspect_bce(torch.tensor([[2.0]]), torch.tensor([[1.0]])).item() == pytest.approx(math.log1p(math.exp(-2)))
    # t = 0.7363 (the paper's example), logit 1: -(t log s + (1 - t) log(1 - s)), s = sigmoid(1)
    s, t = 1 / (1 + math.exp(-1)), 0.7363
    expected = -(t * math.log(s) + (1 - t) * math.log(1 - s))
    assert aspect_bce(torch.tensor([[1.0]]), torch.tensor([[t]])).item() == pytest.approx(expected, rel=1e-6)


def test_makd_losses_weights_and_split():
    logits = torch.tensor([[2.0, 0.0, 0.0, 1.0, 0.0]])  # C = 3, Q = 2
    targets = torch.tensor([[0.7363, 0.5]])
    losses = makd_losses(logits, torch.tensor([0]), targets, num_classes=3, ce_weight=0.5, alpha=4.0)
    ce = -math.log(math.exp(2) / (math.exp(2) + 2))
    s, t = 1 / (1 + math.exp(-1)), 0.7363
    bce = (-(t * math.log(s) + (1 - t) * math.log(1 - s)) + math.log(2)) / 2
    assert losses["loss_ce"].item() == pytest.approx(0.5 * ce, rel=1e-6)
    assert losses["loss_aspect"].item() == pytest.approx(4.0 * bce, rel=1e-6)
    with pytest.raises(ValueError, match="C \\+ Q = 3 \\+ 3"):
        makd_losses(logits, torch.tensor([0]), torch.zeros(1, 3), num_classes=3)


def test_temperature_changes_the_aspect_loss():
    logits, targets = torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.9]])
    plain = makd_losses(logits, torch.tensor([0]), targets, 2, temperature=1.0)["loss_aspect"]
    soft = makd_losses(logits, torch.tensor([0]), targets, 2, temperature=2.0)["loss_aspect"]
    expected_soft = 4.0 * aspect_bce(torch.tensor([[3.0]]), torch.tensor([[0.75]]))
    assert soft.item() == pytest.approx(expected_soft.item(), rel=1e-5) and soft.item() != pytest.approx(plain.item())


class LinearStudent(torch.nn.Module):
    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, outputs)

    def forward(self, x):
        return self.fc(x)


def test_distillers_return_class_logits_and_named_losses():
    cfg = load_cfg(None, ["MaKD.ALPHA", "2.0"])
    images, labels = torch.randn(6, 4), torch.randint(0, 3, (6,))
    makd = build_distiller(cfg, LinearStudent(3 + 2), num_classes=3, num_aspects=2)
    class_logits, losses = makd.forward_train({"image": images, "label": labels, "aspects": torch.rand(6, 2)})
    assert class_logits.shape == (6, 3) and set(losses) == {"loss_ce", "loss_aspect"}
    with pytest.raises(ValueError, match="NaN aspect targets"):
        makd.forward_train({"image": images, "label": labels, "aspects": torch.full((6, 2), float("nan"))})
    base = build_distiller(load_cfg(None, ["DISTILLER.TYPE", "NONE"]), LinearStudent(3), 3, 0)
    class_logits, losses = base.forward_train({"image": images, "label": labels, "aspects": torch.empty(6, 0)})
    assert class_logits.shape == (6, 3) and set(losses) == {"loss_ce"}
    expected = torch.nn.functional.cross_entropy(base.student(images), labels)
    assert losses["loss_ce"].item() == pytest.approx(expected.item())


def test_aspect_bce_mask_averages_over_supervised_entries_only():
    logits = torch.tensor([[2.0, 0.0], [1.0, -3.0]])
    targets = torch.tensor([[1.0, 0.3], [0.7363, 0.0]])
    # Unmasked: the plain mean over the 4 entries (the default keeps today's numbers).
    assert aspect_bce(logits, targets, None).item() == pytest.approx(aspect_bce(logits, targets).item())
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    s, t = 1 / (1 + math.exp(-1)), 0.7363
    expected = (math.log1p(math.exp(-2)) - (t * math.log(s) + (1 - t) * math.log(1 - s))) / 2
    assert aspect_bce(logits, targets, mask).item() == pytest.approx(expected, rel=1e-6)
    assert aspect_bce(logits, targets, torch.zeros(2, 2)).item() == 0.0  # nothing supervised: no loss
    losses = makd_losses(torch.cat([torch.zeros(2, 3), logits], 1), torch.tensor([0, 1]), targets, 3, mask=mask)
    assert losses["loss_aspect"].item() == pytest.approx(4.0 * expected, rel=1e-6)


def test_makd_distiller_ignores_masked_nan_targets():
    cfg = load_cfg(None)
    makd = build_distiller(cfg, LinearStudent(3 + 2), num_classes=3, num_aspects=2)
    images, labels = torch.randn(2, 4), torch.tensor([0, 2])
    aspects = torch.tensor([[0.9, float("nan")], [0.2, 0.4]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    _, losses = makd.forward_train({"image": images, "label": labels, "aspects": aspects, "aspect_mask": mask})
    logits = makd.student(images)[:, 3:]
    expected = aspect_bce(logits, torch.nan_to_num(aspects), mask) * 4.0
    assert torch.isfinite(losses["loss_aspect"]) and losses["loss_aspect"].item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="NaN aspect targets"):
        makd.forward_train({"image": images, "label": labels, "aspects": aspects, "aspect_mask": torch.ones(2, 2)})
