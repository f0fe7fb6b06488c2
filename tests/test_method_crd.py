"""CRD: the NCE loss by hand, the sampler's draws (other classes only, uniform), one full step by hand (scores,
normaliser, memory update) and the embedding widths of the shipped pairs."""

from __future__ import annotations

import math

import pytest
import torch
from distiller_helpers import SIZE, cifar_resnet_maps, fixed_batch, tiny_pair

from makd.config import ConfigError, load_cfg
from makd.distillers.crd import ContrastiveDistiller, ContrastiveSampler, nce_loss
from makd.models import build_student
from makd.models.teacher import ClassLogitsTeacher

LABELS = [0, 1, 2, 0, 1, 2, 3, 3, 0, 1, 4, 4]  # 12 training images of 5 classes


def _nce_by_hand(scores: torch.Tensor, n: int) -> float:
    rows = scores.tolist()
    k = len(rows[0]) - 1
    noise = k / n
    total = 0.0
    for row in rows:
        total += math.log(row[0] / (row[0] + noise + 1e-7))
        total += sum(math.log(noise / (p + noise + 1e-7)) for p in row[1:])
    return -total / len(rows)


def test_nce_loss_by_hand():
    scores = torch.tensor([[2.0e-4, 1.0e-5, 3.0e-5], [5.0e-5, 2.0e-4, 1.0e-6]])
    assert abs(nce_loss(scores, 1000).item() - _nce_by_hand(scores, 1000)) < 1e-5


def test_sampler_draws_positives_and_negatives_from_the_right_classes_uniformly():
    sampler = ContrastiveSampler(LABELS)
    torch.manual_seed(0)
    index = torch.tensor([0, 6, 10])
    idx = sampler.draw(index, 20000, "exact")
    labels = torch.tensor(LABELS)
    assert torch.equal(idx[:, 0], index)
    assert all((labels[idx[row, 1:]] != labels[index[row]]).all() for row in range(3))
    counts = torch.bincount(idx[0, 1:], minlength=12).float()  # image 0 (class 0): 9 other-class images
    others = [i for i, c in enumerate(LABELS) if c != 0]
    assert counts[[0, 3, 8]].sum() == 0 and (counts[others] - 20000 / 9).abs().max() < 5 * math.sqrt(20000 / 9)
    relaxed = sampler.draw(index, 5, "relax")
    assert torch.equal(labels[relaxed[:, 0]], labels[index])
    with pytest.raises(ConfigError, match="the training set has one"):
        ContrastiveSampler([2, 2, 2])


def test_one_crd_step_by_hand():
    student, teacher = tiny_pair()
    distiller = ContrastiveDistiller(student, 5, teacher, SIZE, LABELS, feat_weight=0.8, dim=8, k=7).train()
    batch = fixed_batch(batch_size=4)
    memory_s, memory_t = distiller.memory_student.clone(), distiller.memory_teacher.clone()
    torch.manual_seed(5)
    idx = ContrastiveSampler(LABELS).draw(batch["index"], 7, "exact")
    torch.manual_seed(5)
    _, losses = distiller.forward_train(batch)

    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    ws, wt = distiller.embed_student.linear, distiller.embed_teacher.linear
    e_s = s.pooled @ ws.weight.t() + ws.bias
    e_s = e_s / e_s.norm(dim=1, keepdim=True)
    e_t = t.pooled @ wt.weight.t() + wt.bias
    e_t = e_t / e_t.norm(dim=1, keepdim=True)
    raw_s = torch.exp(torch.stack([memory_t[idx[b]] @ e_s[b] for b in range(4)]) / 0.07)
    raw_t = torch.exp(torch.stack([memory_s[idx[b]] @ e_t[b] for b in range(4)]) / 0.07)
    z_s, z_t = raw_s.mean() * 12, raw_t.mean() * 12
    expected = 0.8 * (_nce_by_hand(raw_s / z_s, 12) + _nce_by_hand(raw_t / z_t, 12))
    assert abs(losses["loss_crd"].item() - expected) < 1e-6 * max(1.0, expected)
    assert torch.allclose(distiller.normalizers, torch.stack([z_s, z_t]).detach(), rtol=1e-6)
    moved = memory_s[batch["index"]] * 0.5 + e_s.detach() * 0.5
    assert torch.allclose(distiller.memory_student[batch["index"]], moved / moved.norm(dim=1, keepdim=True), atol=1e-6)
    untouched = torch.ones(12, dtype=torch.bool)
    untouched[batch["index"]] = False
    assert torch.equal(distiller.memory_teacher[untouched], memory_t[untouched])


def test_embeddings_of_the_shipped_pairs_and_declared_widths():
    mv1 = build_student("MobileNetV1", 10, input_family="imagenet")
    r50 = ClassLogitsTeacher(build_student("ResNet50", 10, input_family="imagenet"), 10)
    distiller = ContrastiveDistiller(mv1, 10, r50, 224, list(range(10)), declared_dims=(1024, 2048), k=4)
    assert (distiller.embed_student.linear.in_features, distiller.embed_teacher.linear.in_features) == (1024, 2048)
    assert tuple(distiller.memory_student.shape) == (10, 128)
    s = build_student("resnet8x4", 10, input_family="cifar")
    t = ClassLogitsTeacher(build_student("resnet32x4", 10, input_family="cifar"), 10)
    with pytest.raises(ConfigError, match=r"^CRD.FEAT.TEACHER_DIM is 512 but the teacher's pooled feature has 256"):
        ContrastiveDistiller(s, 10, t, 32, list(range(10)), declared_dims=(256, 512))
    cfg = load_cfg(None, ["DISTILLER.TYPE", "CRD", "SOLVER.TRAINER", "crd"])
    assert (cfg.CRD.NCE.K, cfg.CRD.NCE.MOMENTUM, cfg.CRD.NCE.TEMPERATURE, cfg.CRD.MODE) == (16384, 0.5, 0.07, "exact")
