"""FitNet: the hint loss by hand on a fixed batch, the regressor's shapes for the shipped pairs, and its keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from distiller_helpers import (
    SIZE,
    batch_norm_train,
    cifar_resnet_maps,
    cross_entropy_by_hand,
    fixed_batch,
    tiny_pair,
)
from torch import nn

from makd.config import ConfigError, load_cfg
from makd.distillers.fitnet import FitNetDistiller, hint_regressor
from makd.models import build_student
from makd.models.teacher import ClassLogitsTeacher


def test_fitnet_losses_by_hand():
    student, teacher = tiny_pair("resnet8", "resnet8x4")  # 32 -> 128 channels at stage 2: a 1x1 regressor
    distiller = FitNetDistiller(student, 5, teacher, SIZE, ce_weight=0.5, feat_weight=3.0, hint_layer=2).train()
    batch = fixed_batch()
    logits, losses = distiller.forward_train(batch)

    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    conv, bn = distiller.regressor[0], distiller.regressor[1]
    assert conv.kernel_size == (1, 1) and (conv.in_channels, conv.out_channels) == (32, 128)
    regressed = F.relu(batch_norm_train(F.conv2d(s.stages[1], conv.weight, conv.bias), bn))
    expected_hint = 3.0 * ((regressed - t.stages[1]) ** 2).sum() / regressed.numel()
    assert torch.allclose(logits, s.logits, atol=1e-6)
    assert abs(losses["loss_ce"].item() - 0.5 * cross_entropy_by_hand(s.logits, batch["label"]).item()) < 1e-6
    assert abs(losses["loss_fitnet"].item() - expected_hint.item()) < 1e-6
    # the regressor learns from the hint term, the teacher does not
    losses["loss_fitnet"].backward()
    assert conv.weight.grad is not None and all(p.grad is None for p in teacher.parameters())


def _regressor(student: str, teacher: str, family: str, size: int, hint: int) -> nn.Module:
    s = build_student(student, 10, input_family=family)
    t = ClassLogitsTeacher(build_student(teacher, 10, input_family=family), 10)
    return FitNetDistiller(s, 10, t, size, hint_layer=hint).regressor[0]


@pytest.mark.parametrize(
    "student,teacher,family,size,hint,kind,kernel,channels",
    [
        ("resnet8x4", "resnet32x4", "cifar", 32, 2, nn.Conv2d, (1, 1), (128, 128)),  # the shipped CIFAR pair
        ("ResNet18", "ResNet50", "imagenet", 224, 2, nn.Conv2d, (1, 1), (128, 512)),  # the fine-grained pair
        ("MobileNetV2", "vgg13", "cifar", 32, 2, nn.Conv2d, (1, 1), (16, 256)),
        ("MobileNetV2", "vgg13", "cifar", 32, 0, nn.ConvTranspose2d, (4, 4), (16, 64)),  # 16 px onto 32 px
    ],
)
def test_regressor_shapes_of_the_shipped_pairs(student, teacher, family, size, hint, kind, kernel, channels):
    conv = _regressor(student, teacher, family, size, hint)
    assert type(conv) is kind and conv.kernel_size == kernel and (conv.in_channels, conv.out_channels) == channels


def test_a_student_map_twice_the_teachers_gets_a_strided_conv_and_bad_layers_are_refused():
    conv = _regressor("resnet8x4", "MobileNetV2", "cifar", 32, 1)  # 64x32x32 onto 12x16x16
    assert conv.stride == (2, 2) and conv.kernel_size == (3, 3) and conv.out_channels == 12
    with pytest.raises(ConfigError, match=r"^FITNET.HINT_LAYER 4 is past the last stage: the student has 3 stages"):
        _regressor("resnet8x4", "resnet32x4", "cifar", 32, 4)
    with pytest.raises(ValueError, match=r"^no regressor maps a 4x4 student map onto a 16x16 teacher map$"):
        hint_regressor(torch.Size([1, 8, 4, 4]), torch.Size([1, 8, 16, 16]))


def test_fitnet_keys_load_as_mdistiller_names_them():
    cfg = load_cfg(None, ["DISTILLER.TYPE", "FITNET", "DATASET.IMAGE_SIZE", "32"])
    assert (cfg.FITNET.HINT_LAYER, cfg.FITNET.LOSS.CE_WEIGHT, cfg.FITNET.LOSS.FEAT_WEIGHT) == (2, 1.0, 100.0)
    assert load_cfg(None, ["DISTILLER.TYPE", "fitnet", "FITNET.INPUT_SIZE", "[32, 32]", "DATASET.IMAGE_SIZE", "32"])
    with pytest.raises(ConfigError, match=r"^FITNET.INPUT_SIZE \[32, 32\] differs from DATASET.IMAGE_SIZE 224"):
        load_cfg(None, ["DISTILLER.TYPE", "FITNET", "FITNET.INPUT_SIZE", "[32, 32]"])
    with pytest.raises(ConfigError, match=r"^DISTILLER.TEACHER_PRECOMPUTE cannot be used with DISTILLER.TYPE FITNET"):
        load_cfg(None, ["DISTILLER.TYPE", "FITNET", "DISTILLER.TEACHER_PRECOMPUTE", "True"])
