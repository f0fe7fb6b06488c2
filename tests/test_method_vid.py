"""VID: the Gaussian negative log-likelihood by hand, the learned variances, the regressors' shapes and keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from distiller_helpers import SIZE, cifar_resnet_maps, fixed_batch, tiny_pair

from makd.config import ConfigError, load_cfg
from makd.distillers.vid import VariationalInformationDistiller
from makd.models import build_student
from makd.models.teacher import ClassLogitsTeacher


def _regress(regressor, x):
    c1, c2, c3 = regressor[0].weight, regressor[2].weight, regressor[4].weight
    return F.conv2d(F.relu(F.conv2d(F.relu(F.conv2d(x, c1)), c2)), c3)


def test_vid_losses_by_hand_and_the_variance_is_learned():
    student, teacher = tiny_pair("resnet8", "resnet8x4")
    distiller = VariationalInformationDistiller(student, 5, teacher, SIZE, feat_weight=1.5, eps=1e-5, init_var=5.0)
    with torch.no_grad():  # distinct variances per channel, so the per-channel broadcast is checked
        for alpha in distiller.log_scales:
            alpha.add_(torch.linspace(-1, 1, len(alpha)))
    batch = fixed_batch()
    batch["image"] = batch["image"].double()
    _, losses = distiller.double().train().forward_train(batch)  # float64 end to end: the comparison is to 1e-6
    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    expected = 0.0
    for f_s, f_t, regressor, alpha in zip(s.stages, t.stages, distiller.regressors, distiller.log_scales):
        mu = _regress(regressor, f_s)
        var = (torch.log1p(torch.exp(alpha)) + 1e-5).view(1, -1, 1, 1)
        expected = expected + (0.5 * ((f_t - mu) ** 2 / var + torch.log(var))).sum() / mu.numel()
    assert abs(losses["loss_vid"].item() - 1.5 * expected.item()) < 1e-6
    losses["loss_vid"].backward()
    assert all(alpha.grad is not None and alpha.grad.abs().sum() > 0 for alpha in distiller.log_scales)
    learnable = {id(p) for p in distiller.learnable_parameters()}
    assert all(id(alpha) in learnable for alpha in distiller.log_scales)


def test_variances_start_at_init_pred_var_and_regressors_fit_the_shipped_pair():
    s = build_student("resnet8x4", 10, input_family="cifar")
    t = ClassLogitsTeacher(build_student("resnet32x4", 10, input_family="cifar"), 10)
    distiller = VariationalInformationDistiller(s, 10, t, 32, init_var=5.0, eps=1e-5)
    for alpha in distiller.log_scales:
        assert torch.allclose(F.softplus(alpha) + 1e-5, torch.full_like(alpha, 5.0))
    shapes = [(r[0].in_channels, r[0].out_channels, r[4].out_channels) for r in distiller.regressors]
    assert shapes == [(64, 64, 64), (128, 128, 128), (256, 256, 256)]
    r18 = build_student("ResNet18", 10, input_family="imagenet")
    r50 = ClassLogitsTeacher(build_student("ResNet50", 10, input_family="imagenet"), 10)
    fine = VariationalInformationDistiller(r18, 10, r50, 224)
    assert [(r[0].in_channels, r[0].out_channels) for r in fine.regressors] == [
        (64, 256),
        (128, 512),
        (256, 1024),
        (512, 2048),
    ]


def test_vid_keys():
    cfg = load_cfg(None, ["DISTILLER.TYPE", "VID"])
    assert (cfg.VID.EPS, cfg.VID.INIT_PRED_VAR, cfg.VID.LOSS.FEAT_WEIGHT) == (1e-5, 5.0, 1.0)
    with pytest.raises(ConfigError, match=r"^VID.EPS must be > 0 and VID.INIT_PRED_VAR above it"):
        load_cfg(None, ["DISTILLER.TYPE", "VID", "VID.INIT_PRED_VAR", "0"])
