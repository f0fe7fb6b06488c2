"""ReviewKD: the fusion and the hierarchical context loss by hand on a tiny pair, the warm-up, the modules of the
shipped pairs against mdistiller's declared shapes and widths, and refusals of wrong declarations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from distiller_helpers import SIZE, batch_norm_train, cifar_resnet_maps, fixed_batch, tiny_pair

from makd.config import ConfigError, load_cfg
from makd.distillers.reviewkd import ReviewDistiller, hierarchical_context_loss
from makd.models import build_student
from makd.models.teacher import ClassLogitsTeacher


def _mse(a, b):
    return ((a - b) ** 2).sum() / a.numel()


def _hcl_by_hand(out, target):
    loss, weight, weights = _mse(out, target), 1.0, 1.0
    for size in (4, 2, 1):
        if size >= out.shape[2]:
            continue
        k = out.shape[2] // size  # the maps here divide evenly: average pooling by reshaping
        pool = lambda x, k=k, size=size: x.reshape(x.shape[0], x.shape[1], size, k, size, k).mean(dim=(3, 5))  # noqa: E731
        weight /= 2
        loss = loss + weight * _mse(pool(out), pool(target))
        weights += weight
    return loss / weights


def test_hierarchical_context_loss_by_hand():
    torch.manual_seed(0)
    outs = [torch.randn(2, 3, 8, 8), torch.randn(2, 4, 4, 4), torch.randn(2, 5, 1, 1)]
    targets = [torch.randn_like(o) for o in outs]
    expected = sum(_hcl_by_hand(o, t) for o, t in zip(outs, targets))
    assert abs(hierarchical_context_loss(outs, targets).item() - expected.item()) < 1e-6


def test_review_loss_by_hand_with_fusion_and_warmup():
    student, teacher = tiny_pair("resnet8", "resnet8x4")
    distiller = ReviewDistiller(student, 5, teacher, SIZE, review_weight=2.0, warmup_epochs=4).train()
    distiller.set_epoch(0)  # first epoch: weight 1/4
    batch = fixed_batch()
    _, losses = distiller.forward_train(batch)
    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    s_levels = [*s.stages, s.pooled[:, :, None, None]][::-1]  # deepest first
    t_levels = [*t.preact, t.pooled[:, :, None, None]][::-1]
    total, residual = 0.0, None
    for fusion, x, target in zip(distiller.fusions, s_levels, t_levels):
        x = batch_norm_train(F.conv2d(x, fusion.reduce[0].weight), fusion.reduce[1])
        if residual is not None:
            up = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            conv = fusion.attention[0]
            w = torch.sigmoid(F.conv2d(torch.cat([x, up], 1), conv.weight, conv.bias))
            x = x * w[:, :1] + up * w[:, 1:]
        residual = x
        out = batch_norm_train(F.conv2d(x, fusion.expand[0].weight, padding=1), fusion.expand[1])
        total = total + _hcl_by_hand(out, target)
    assert abs(losses["loss_reviewkd"].item() - 2.0 * 0.25 * total.item()) < 1e-6 * max(1.0, total.item())
    distiller.set_epoch(9)
    assert distiller.warmup_factor() == 1.0


def _pair(student, teacher, family, size, **kw):
    s = build_student(student, 10, input_family=family)
    t = ClassLogitsTeacher(build_student(teacher, 10, input_family=family), 10)
    return ReviewDistiller(s, 10, t, size, **kw)


def test_modules_of_the_shipped_pairs_match_mdistillers_declarations():
    # configs/cifar100/reviewkd.yaml relies on mdistiller's defaults, which describe resnet32x4 -> resnet8x4
    cifar = dict(SHAPES=[1, 8, 16, 32], OUT_SHAPES=[1, 8, 16, 32], IN_CHANNELS=[64, 128, 256, 256])
    cifar["OUT_CHANNELS"] = [64, 128, 256, 256]
    distiller = _pair("resnet8x4", "resnet32x4", "cifar", 32, declared=cifar)
    assert [f.reduce[0].out_channels for f in distiller.fusions] == [256] * 4  # min(512, 256)
    assert [f.expand[0].out_channels for f in distiller.fusions] == [256, 256, 128, 64]
    # configs/imagenet/r50_mv1/reviewkd.yaml: MobileNetV1 -> ResNet50 with MAX_MID_CHANNEL 256, student pre-activation
    imagenet = dict(SHAPES=[1, 7, 14, 28, 56], OUT_SHAPES=[1, 7, 14, 28, 56], IN_CHANNELS=[128, 256, 512, 1024, 1024])
    imagenet["OUT_CHANNELS"] = [256, 512, 1024, 2048, 2048]
    mv1 = _pair("MobileNetV1", "ResNet50", "imagenet", 224, max_mid_channel=256, student_preact=True, declared=imagenet)
    assert [f.reduce[0].out_channels for f in mv1.fusions] == [256] * 5
    assert [f.attention is None for f in mv1.fusions] == [True, False, False, False, False]
    with pytest.raises(ConfigError, match=r"^REVIEWKD.IN_CHANNELS is \[64, 128, 256, 512, 512\] but the student/teach"):
        _pair("resnet8x4", "resnet32x4", "cifar", 32, declared={"IN_CHANNELS": [64, 128, 256, 512, 512]})


def test_reviewkd_keys():
    cfg = load_cfg(None, ["DISTILLER.TYPE", "REVIEWKD"])
    assert (cfg.REVIEWKD.WARMUP_EPOCHS, cfg.REVIEWKD.MAX_MID_CHANNEL, cfg.REVIEWKD.STU_PREACT) == (20, 512, False)
    with pytest.raises(ConfigError, match=r"^REVIEWKD.REVIEWKD_WEIGHT must be >= 0"):
        load_cfg(None, ["DISTILLER.TYPE", "REVIEWKD", "REVIEWKD.REVIEWKD_WEIGHT", "-1"])
