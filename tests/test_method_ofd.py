"""OFD: margins from the teacher's BatchNorm (checked against a Monte Carlo estimate), the partial L2 distance by
hand (loops over entries), the whole loss on a tiny pair, connector shapes for the shipped pairs, refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from distiller_helpers import SIZE, batch_norm_train, cifar_resnet_maps, fixed_batch, tiny_pair
from torch import nn

from makd.config import ConfigError, load_cfg
from makd.distillers.ofd import OverhaulDistiller, margins_from_batchnorm, partial_l2
from makd.models import build_student
from makd.models.teacher import ClassLogitsTeacher


def test_margins_are_the_mean_of_the_negative_responses():
    norm = nn.BatchNorm2d(3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, -2.0, 0.1])), norm.bias.copy_(torch.tensor([0.5, -1.0, 1.0]))
    margins = margins_from_batchnorm(norm)
    generator = torch.Generator().manual_seed(0)
    for c in range(2):  # the third channel has P(x < 0) < 0.001: its margin is -3 |gamma|
        x = norm.bias[c].item() + abs(norm.weight[c].item()) * torch.randn(2_000_000, generator=generator)
        assert abs(margins[c].item() - x[x < 0].mean().item()) < 5e-3
    assert margins[2].item() == pytest.approx(-0.3)


def _partial_by_hand(s: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> float:
    total = 0.0
    for b in range(s.shape[0]):
        for c in range(s.shape[1]):
            for i in range(s.shape[2]):
                for j in range(s.shape[3]):
                    target = max(t[b, c, i, j].item(), m[c].item())
                    value = s[b, c, i, j].item()
                    if not (value <= target <= 0):
                        total += (target - value) ** 2
    return total / s.shape[0]


def test_partial_l2_by_hand():
    torch.manual_seed(0)
    s, t, m = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2), torch.tensor([-0.5, -1.0, -0.1])
    assert abs(partial_l2(s, t, m).item() - _partial_by_hand(s, t, m)) < 1e-6


def test_ofd_loss_by_hand_on_a_tiny_pair():
    student, teacher = tiny_pair("resnet8", "resnet8x4")
    distiller = OverhaulDistiller(student, 5, teacher, SIZE, feat_weight=0.5).train()
    batch = fixed_batch(batch_size=3)
    _, losses = distiller.forward_train(batch)
    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    expected = 0.0
    for i, (f_s, f_t, conv) in enumerate(zip(s.preact, t.preact, distiller.connectors)):
        y = batch_norm_train(F.conv2d(f_s, conv[0].weight), conv[1]).detach()
        margin = margins_from_batchnorm(teacher.model.stages[i][-1].bn2)  # the BN before each stage's last ReLU
        expected += _partial_by_hand(y, f_t, margin) / 2 ** (2 - i)
    assert abs(losses["loss_ofd"].item() - 0.5 * expected) < 1e-6 * max(1.0, expected)
    assert not any(name.startswith("margin") for name in distiller.state_dict())  # recomputed at every start


def test_connectors_of_the_shipped_pairs_and_refusals():
    mv1 = build_student("MobileNetV1", 10, input_family="imagenet")
    r50 = ClassLogitsTeacher(build_student("ResNet50", 10, input_family="imagenet"), 10)
    distiller = OverhaulDistiller(mv1, 10, r50, 224)  # configs/imagenet/r50_mv1/ofd.yaml
    assert [(c[0].in_channels, c[0].out_channels) for c in distiller.connectors] == [
        (128, 256),
        (256, 512),
        (512, 1024),
        (1024, 2048),
    ]
    assert [len(m) for m in distiller.margins()] == [256, 512, 1024, 2048]
    s = build_student("resnet8x4", 10, input_family="cifar")
    t = ClassLogitsTeacher(build_student("resnet32x4", 10, input_family="cifar"), 10)
    assert [c[0].out_channels for c in OverhaulDistiller(s, 10, t, 32).connectors] == [64, 128, 256]
    wrn = ClassLogitsTeacher(build_student("wrn_40_2", 10, input_family="cifar"), 10)
    with pytest.raises(ConfigError, match=r"^DISTILLER.TYPE OFD: teacher teacher \(makd Wide ResNet\): no single"):
        OverhaulDistiller(build_student("wrn_16_2", 10, input_family="cifar"), 10, wrn, 32)
    with pytest.raises(ConfigError, match=r"^OFD.CONNECTOR.KERNEL_SIZE must be an odd number >= 1, got 2$"):
        load_cfg(None, ["DISTILLER.TYPE", "OFD", "OFD.CONNECTOR.KERNEL_SIZE", "2"])
