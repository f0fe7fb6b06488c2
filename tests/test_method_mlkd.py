"""MLKD: the instance, batch and class terms by hand (loops), the teacher-confidence masks, one full two-view step
by hand on a tiny pair in each formulation (the repository's loss, term for term, and the symmetric one), and the
settings it refuses (mixup of two-view batches, a precomputed teacher, an unknown formulation)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from distiller_helpers import fixed_batch, tiny_pair
from tool_modules import load_tool

from makd.config import ConfigError, load_cfg
from makd.distillers.mlkd import MultiLevelDistiller, batch_term, class_term, confident, instance_term
from makd.models import build_student


def _softmax(row, t):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def _by_hand(s: torch.Tensor, t: torch.Tensor, temperature: float, classes=None):
    ps = [_softmax(r, temperature) for r in s.tolist()]
    pt = [_softmax(r, temperature) for r in t.tolist()]
    b, c = len(ps), len(ps[0])
    instance = [temperature**2 * sum(q * math.log(q / p) for p, q in zip(ps[i], pt[i])) for i in range(b)]
    batch = sum(
        (sum(pt[i][k] * pt[j][k] for k in range(c)) - sum(ps[i][k] * ps[j][k] for k in range(c))) ** 2
        for i in range(b)
        for j in range(b)
    )
    kept = list(range(c)) if classes is None else [k for k in range(c) if classes[k]]
    klass = sum(
        (sum(pt[i][k] * pt[i][m] for i in range(b)) - sum(ps[i][k] * ps[i][m] for i in range(b))) ** 2
        for k in kept
        for m in kept
    )
    return instance, batch / b, klass / len(kept)


def test_the_three_levels_by_hand():
    torch.manual_seed(0)
    s, t = torch.randn(4, 5), 2 * torch.randn(4, 5)
    for temperature in (1.0, 4.0):
        instance, batch, klass = _by_hand(s, t, temperature)
        assert torch.allclose(instance_term(s, t, temperature), torch.tensor(instance), atol=1e-6)
        assert abs(batch_term(s, t, temperature).item() - batch) < 1e-6
        assert abs(class_term(s, t, temperature).item() - klass) < 1e-6
    mask = torch.tensor([True, False, True, True, False])
    assert abs(class_term(s, t, 2.0, mask).item() - _by_hand(s, t, 2.0, mask.tolist())[2]) < 1e-6


def test_confidence_masks_keep_the_upper_half():
    teacher = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.2, 0.7, 0.1], [0.34, 0.33, 0.33]]))
    samples, classes = confident(teacher)
    assert samples.tolist() == [True, False, True, False]  # confidences .9 .4 .7 .34, median .55
    assert classes.tolist() == [True, True, False]  # masses 1.84, 1.38, 0.78, median 1.38


def test_one_symmetric_two_view_step_by_hand():
    student, teacher = tiny_pair()
    student, teacher = student.double(), teacher.double()  # float64 end to end: the comparison is to 1e-6
    distiller = MultiLevelDistiller(
        student, 5, teacher, ce_weight=0.1, kd_weight=0.9, temperatures=[2.0, 4.0], formulation="symmetric"
    ).train()
    batch = fixed_batch(batch_size=6)
    batch["image"] = batch["image"].double()
    batch["image_strong"] = torch.flip(batch["image"], dims=[3]) + 0.1 * torch.randn_like(batch["image"])
    logits, losses = distiller.forward_train(batch)
    weak, strong = student(batch["image"]), student(batch["image_strong"])  # train mode: the same batch statistics
    with torch.no_grad():
        tw, ts = teacher(batch["image"]), teacher(batch["image_strong"])
    assert torch.allclose(logits, weak, atol=1e-6)
    samples, classes = confident(tw)
    keep = samples.nonzero().flatten()
    expected = {"kd": 0.0, "bc": 0.0, "cc": 0.0}
    for temperature in (2.0, 4.0):
        i_w, b_w, c_w = _by_hand(weak.detach()[keep], tw[keep], temperature, classes.tolist())
        i_s, b_s, c_s = _by_hand(strong.detach(), ts, temperature)
        expected["kd"] += sum(i_w) / len(i_w) + sum(i_s) / len(i_s)
        expected["bc"] += b_w + b_s
        expected["cc"] += c_w + c_s
    for name, value in expected.items():
        assert abs(losses[f"loss_{name}"].item() - 0.9 * value) < 1e-6 * max(1.0, value), name
    ce = F.cross_entropy(weak, batch["label"]) + F.cross_entropy(strong, batch["label"])
    assert abs(losses["loss_ce"].item() - 0.1 * ce.item()) < 1e-6
    assert 3 <= len(keep) <= 6


def test_one_repository_step_by_hand():
    """The repository's loss: the weak view's levels, each scaled by the fraction its at-or-below-median mask keeps,
    and the strong view's instance level, whose T = 2 and T = 6 terms come from the weak view."""
    student, teacher = tiny_pair()
    student, teacher = student.double(), teacher.double()
    temperatures = [4.0, 3.0, 5.0, 2.0, 6.0]  # the repository's order; its sums do not depend on it
    distiller = MultiLevelDistiller(student, 5, teacher, ce_weight=0.1, kd_weight=0.9, temperatures=temperatures)
    assert distiller.formulation == "repository"
    batch = fixed_batch(batch_size=7)
    batch["image"] = batch["image"].double()
    batch["image_strong"] = torch.flip(batch["image"], dims=[2]) + 0.2 * torch.randn_like(batch["image"])
    _, losses = distiller.train().forward_train(batch)
    weak, strong = student(batch["image"]).detach(), student(batch["image_strong"]).detach()
    with torch.no_grad():
        tw, ts = teacher(batch["image"]), teacher(batch["image_strong"])
    probabilities = [_softmax(row, 1.0) for row in tw.tolist()]
    confidence = sorted(max(row) for row in probabilities)
    mass = sorted(sum(row[k] for row in probabilities) for k in range(5))
    median_conf, median_mass = confidence[3], mass[2]  # 7 samples, 5 classes: the middle values
    sample_fraction = sum(max(row) <= median_conf for row in probabilities) / 7
    class_fraction = sum(sum(row[k] for row in probabilities) <= median_mass for k in range(5)) / 5
    kd = bc = cc = 0.0
    for t in temperatures:
        i_w, b_w, c_w = _by_hand(weak, tw, t)
        i_s = _by_hand(weak, tw, t)[0] if t in (2.0, 6.0) else _by_hand(strong, ts, t)[0]
        kd += sample_fraction * sum(i_w) / 7 + sum(i_s) / 7
        bc += sample_fraction * b_w
        cc += class_fraction * c_w
    for name, value in {"kd": kd, "bc": bc, "cc": cc}.items():
        assert abs(losses[f"loss_{name}"].item() - 0.9 * value) < 1e-6 * max(1.0, value), name
    assert sample_fraction == 4 / 7 and class_fraction == 3 / 5


def test_mlkd_settings():
    cfg = load_cfg(None, ["DISTILLER.TYPE", "MLKD"])
    assert (cfg.MLKD.CE_WEIGHT, cfg.MLKD.KD_WEIGHT, cfg.MLKD.TEMPERATURES) == (0.1, 0.9, [2.0, 3.0, 4.0, 5.0, 6.0])
    assert cfg.MLKD.FORMULATION == "repository"
    with pytest.raises(ConfigError, match=r"^MLKD.FORMULATION 'paper' is unknown; use repository or symmetric$"):
        load_cfg(None, ["DISTILLER.TYPE", "MLKD", "MLKD.FORMULATION", "paper"])
    with pytest.raises(
        ConfigError, match=r"^DISTILLER.TYPE MLKD trains on a weak and a strong view .* DATASET.AUGMENT.MIXUP_ALPHA"
    ):
        load_cfg(None, ["DISTILLER.TYPE", "MLKD", "DATASET.AUGMENT.MIXUP_ALPHA", "0.2"])
    with pytest.raises(ConfigError, match=r"^DISTILLER.TEACHER_PRECOMPUTE cannot be used with DISTILLER.TYPE MLKD"):
        load_cfg(None, ["DISTILLER.TYPE", "MLKD", "DISTILLER.TEACHER_PRECOMPUTE", "True"])
    with pytest.raises(ConfigError, match=r"^MLKD.TEMPERATURES must be a non-empty list of numbers > 0"):
        load_cfg(None, ["DISTILLER.TYPE", "MLKD", "MLKD.TEMPERATURES", "[]"])


def test_an_mlkd_run_records_its_strong_view(release_dataset):
    root = release_dataset["root"]
    torch.manual_seed(2)
    torch.save(build_student("resnet14", 3, input_family="cifar").state_dict(), root / "teacher.pth")
    args = [
        str(release_dataset["config"]),
        *("DISTILLER.TYPE", "MLKD", "DISTILLER.STUDENT", "resnet8", "DISTILLER.TEACHER", "resnet14"),
        *("DISTILLER.TEACHER_CHECKPOINT", str(root / "teacher.pth"), "SOLVER.EPOCHS", "1"),
        *("DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0", "OUTPUT_DIR", str(root / "mlkd")),
    ]
    assert load_tool("our_train").main(args) == 0
    summary = json.loads((root / "mlkd" / "summary.json").read_text())
    assert summary["recipe"]["strong_view"]["policy"] == "randaugment"
    assert summary["recipe"]["strong_view"]["randaugment_m"] == 10
