"""MLKD.FORMULATION repository against the MLKD repository's own code, where a mirror of it is present
(Jin-Ying/Multi-Level-Logit-Distillation, its `KD_ours` distiller, read from the mirror and run as it is): the same
student, teacher, images and views give the same four losses, so the default formulation is the loss that
produced the published numbers. Skips with a one-line reason without the mirror (docs/testing.md)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch
from distiller_helpers import fixed_batch, tiny_pair
from mirrors import absent_reason, mirror
from yacs.config import CfgNode as CN

from makd.distillers.mlkd import MultiLevelDistiller

REPOSITORY = "Jin-Ying/Multi-Level-Logit-Distillation"
SOURCE = "mdistiller/distillers/KD_ours.py"


class _Networks(torch.nn.Module):
    """The repository's Distiller base: it holds a student and a teacher whose calls return (logits, features)."""

    def __init__(self, student, teacher):
        super().__init__()
        self.student, self.teacher = student, teacher


class _PairOutput(torch.nn.Module):
    """One of our networks called as the repository calls its own: (logits, features)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        return self.net(images), None


def _repository_class(monkeypatch):
    """KD_ours from the mirror, its package imports given here (its Distiller base; termios and turtle names it
    imports but never uses)."""
    git = mirror(REPOSITORY)
    if not git.is_dir():
        pytest.skip(absent_reason(REPOSITORY))
    shown = subprocess.run(["git", "-C", str(git), "show", f"HEAD:{SOURCE}"], capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip(f"{REPOSITORY} mirror has no {SOURCE} at HEAD")
    package = types.ModuleType("mlkd_repository")
    package.__path__ = []
    base, loss = types.ModuleType("mlkd_repository._base"), types.ModuleType("mlkd_repository.loss")
    base.Distiller, loss.CrossEntropyLabelSmooth = _Networks, None
    unused = {"termios": types.ModuleType("termios"), "turtle": types.ModuleType("turtle")}
    unused["termios"].CEOL, unused["turtle"].st = 0, None
    for name, module in {"mlkd_repository": package, "mlkd_repository._base": base, "mlkd_repository.loss": loss,
                         **unused}.items():  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    module = types.ModuleType("mlkd_repository.KD_ours")
    module.__package__ = "mlkd_repository"
    exec(compile(shown.stdout, f"{REPOSITORY}/{SOURCE}", "exec"), module.__dict__)
    return module.KD_ours


def test_the_repository_formulation_is_the_repository_loss(monkeypatch):
    KD_ours = _repository_class(monkeypatch)
    student, teacher = tiny_pair()
    student, teacher = student.double(), teacher.double()  # float64: the comparison is to 1e-9
    cfg = CN({"KD": CN({"TEMPERATURE": 4.0, "LOSS": CN({"CE_WEIGHT": 0.1, "KD_WEIGHT": 0.9})})})
    theirs = KD_ours(_PairOutput(student), _PairOutput(teacher), cfg)
    ours = MultiLevelDistiller(student, 5, teacher, ce_weight=0.1, kd_weight=0.9)
    assert ours.formulation == "repository" and ours.temperatures == [2.0, 3.0, 4.0, 5.0, 6.0]
    for seed in (1, 2, 3):
        batch = fixed_batch(batch_size=8, seed=seed)
        weak = batch["image"].double()
        noise = torch.randn(weak.shape, generator=torch.Generator().manual_seed(seed), dtype=weak.dtype)
        strong = torch.flip(weak, dims=[3]) + 0.3 * noise
        their_logits, their_losses = theirs.forward_train(image_weak=weak, image_strong=strong, target=batch["label"])
        our_logits, our_losses = ours.forward_train({"image": weak, "image_strong": strong, "label": batch["label"]})
        assert torch.equal(our_logits, their_logits)  # train mode, the same batch statistics: the same weak logits
        assert set(our_losses) == set(their_losses) == {"loss_ce", "loss_kd", "loss_bc", "loss_cc"}
        for name, value in their_losses.items():
            assert our_losses[name].item() == pytest.approx(value.item(), rel=1e-9, abs=1e-12), (seed, name)
        assert their_losses["loss_kd"].item() > 0 and their_losses["loss_cc"].item() > 0
