"""KDSVD: the singular-vector relation loss by hand (numpy's SVD, loops over channel pairs), the vector matching,
and the refusal of pairs whose stages differ in width."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from distiller_helpers import SIZE, cifar_resnet_maps, fixed_batch, tiny_pair

from makd.config import ConfigError
from makd.distillers.kdsvd import SingularVectorDistiller, align_to_teacher, kdsvd_loss


def _vectors(feature: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(V [C, k] with unit columns, S [k] with unit norm) of one map [C, H, W] read as [H*W, C]."""
    x = feature.reshape(feature.shape[0], -1).T
    _, s, vh = np.linalg.svd(x, full_matrices=False)
    v = vh.T[:, :k]
    return v / np.linalg.norm(v, axis=0, keepdims=True), s[:k] / np.linalg.norm(s[:k])


def _signed(v: np.ndarray) -> np.ndarray:
    """Each column's largest-magnitude entry made positive (the method's sign convention for teacher vectors)."""
    return v * np.sign(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])])


def _kdsvd_by_hand(student_maps, teacher_maps, k: int) -> float:
    batch = student_maps[0].shape[0]
    total = 0.0
    for b in range(batch):
        previous = None
        for fs, ft in zip(student_maps, teacher_maps):
            vt, st = _vectors(ft[b].numpy().astype(np.float64), k)
            vt = _signed(vt)
            vs_all, _ = _vectors(fs[b].detach().numpy().astype(np.float64), k + 3)
            vs = np.zeros_like(vt)
            for j in range(k):  # the student vector most aligned with teacher vector j, sign included
                cos = vs_all.T @ vt[:, j]
                i = int(np.argmax(np.abs(cos)))
                vs[:, j] = np.sign(cos[i]) * vs_all[:, i]
            vs, vt = vs * st, vt * st
            if previous is not None:
                ps, pt = previous
                for c in range(vs.shape[0]):
                    for c2 in range(ps.shape[0]):
                        for j in range(k):
                            a = math.exp(-((vs[c, j] - ps[c2, j]) ** 2) / 8)
                            t = math.exp(-((vt[c, j] - pt[c2, j]) ** 2) / 8)
                            total += (a - t) ** 2
            previous = (vs, vt)
    return total / batch


def test_kdsvd_loss_by_hand_on_small_maps():
    torch.manual_seed(0)
    student = [torch.randn(2, 4, 3, 3), torch.randn(2, 6, 2, 3)]
    teacher = [torch.randn(2, 4, 3, 3), torch.randn(2, 6, 2, 3)]
    for k in (1, 2):
        assert abs(kdsvd_loss(student, teacher, k).item() - _kdsvd_by_hand(student, teacher, k)) < 1e-6


def test_the_loss_does_not_depend_on_the_sign_the_svd_returns():
    torch.manual_seed(0)
    maps = [torch.randn(2, 4, 3, 3), torch.randn(2, 6, 2, 3)]
    student = [m + 0.1 * torch.randn_like(m) for m in maps]
    flipped = [maps[0], -maps[1]]  # negating a map negates its singular vectors; the convention undoes it
    assert abs(kdsvd_loss(student, maps, 1).item() - kdsvd_loss(student, flipped, 1).item()) < 1e-6


def test_matching_picks_the_most_aligned_student_vector_with_its_sign():
    teacher = torch.tensor([[[1.0], [0.0], [0.0]]])  # [B=1, C=3, k=1]
    student = torch.tensor([[[0.0, 0.6, -0.9], [1.0, 0.8, 0.1], [0.0, 0.0, 0.42]]])  # 3 candidates
    assert torch.allclose(align_to_teacher(student, teacher), torch.tensor([[[0.9], [-0.1], [-0.42]]]))


def test_kdsvd_distiller_by_hand_and_gradients_stay_finite():
    student, teacher = tiny_pair("resnet8", "resnet14")  # equal stage widths 16, 32, 64
    distiller = SingularVectorDistiller(student, 5, teacher, SIZE, feat_weight=2.0, k=1).double().train()
    batch = fixed_batch(batch_size=2)
    batch["image"] = batch["image"].double()  # float64 end to end: the comparison is to 1e-6
    _, losses = distiller.forward_train(batch)
    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    assert abs(losses["loss_kdsvd"].item() - 2.0 * _kdsvd_by_hand(s.stages, t.stages, 1)) < 1e-6
    losses["loss_kdsvd"].backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)


def test_pairs_of_different_stage_widths_are_refused_in_one_line():
    student, teacher = tiny_pair("resnet8", "resnet8x4")
    with pytest.raises(ConfigError) as info:
        SingularVectorDistiller(student, 5, teacher, SIZE)
    assert str(info.value).startswith(
        "DISTILLER.TYPE KDSVD compares singular vectors over channels, but paired stage 1 has 16 student and 64 "
        "teacher channels"
    )
