"""The distiller contract: registry-backed config checks, the frozen teacher, the learnable parameters."""

from __future__ import annotations

import pytest
import torch

from makd.config import ConfigError, get_cfg, load_cfg
from makd.config.defaults import uses_aspects, uses_teacher
from makd.distillers import DISTILLERS, Distiller, build_distiller, distiller_class, distiller_classes
from makd.engine.optim import build_optimizer


class TinyNet(torch.nn.Module):
    """4 features -> BatchNorm -> dropout -> Linear: train/eval mode changes its output."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.bn, self.drop, self.fc = torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5), torch.nn.Linear(4, outputs)

    def forward(self, x):
        return self.fc(self.drop(self.bn(x)))


class ProbeDistiller(Distiller):
    """A teacher-using method defined only here (not registered): the base class alone must freeze the teacher."""

    name = "PROBE"
    needs_teacher = True

    def forward_train(self, batch):
        logits = self.student(batch["image"])
        return logits, {"loss_gap": (logits - self.teacher_logits(batch)).pow(2).mean()}


def test_every_method_declares_itself_and_the_config_asks_the_registry():
    names = {cls.name for cls in distiller_classes()}
    assert {"NONE", "MaKD"} <= names
    for cls in distiller_classes():
        assert cls.name in DISTILLERS and DISTILLERS.get(cls.name) is cls and distiller_class(cls.name.lower()) is cls
        cfg = load_cfg(None, ["DISTILLER.TYPE", cls.name])
        assert uses_aspects(cfg) is cls.needs_aspects and uses_teacher(cfg) is cls.needs_teacher
        assert cls.head_outputs(10, 4) == (14 if cls.needs_aspects else 10)
    with pytest.raises(ConfigError) as err:
        load_cfg(None, ["DISTILLER.TYPE", "CRD"])
    message = str(err.value)
    assert message.startswith("DISTILLER.TYPE 'CRD' is unknown; use one of") and "\n" not in message
    assert all(name in message for name in names)


def test_teacher_is_frozen_in_eval_mode_and_left_out_of_the_optimizer():
    torch.manual_seed(0)
    student, teacher = TinyNet(3), TinyNet(3)
    distiller = ProbeDistiller(student, num_classes=3, teacher=teacher)
    assert not any(p.requires_grad for p in teacher.parameters())
    distiller.train()
    assert student.training and not teacher.training and not teacher.drop.training
    x = torch.randn(8, 4)
    before = teacher.bn.running_mean.clone()
    first = distiller.teacher_logits({"image": x})
    assert torch.equal(first, distiller.teacher_logits({"image": x}))  # no dropout, no batch statistics
    assert torch.equal(teacher.bn.running_mean, before)
    learnable = list(distiller.learnable_parameters())
    assert {id(p) for p in learnable} == {id(p) for p in student.parameters()}
    cfg = load_cfg(None)
    optimizer = build_optimizer(cfg, distiller)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(student.parameters()))
    # One step moves the student and leaves the teacher's weights untouched.
    teacher_weights = {k: v.clone() for k, v in teacher.state_dict().items()}
    _, losses = distiller({"image": x})
    sum(losses.values()).backward()
    optimizer.step()
    assert all(torch.equal(teacher_weights[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    # The teacher's tensors sit under "teacher." in the distiller's state (a checkpoint leaves them out).
    assert any(k.startswith("teacher.") for k in distiller.state_dict())
    with pytest.raises(ValueError, match="needs a teacher"):
        ProbeDistiller(TinyNet(3), num_classes=3)


def test_precomputed_teacher_logits_are_read_by_index():
    distiller = ProbeDistiller(TinyNet(3), num_classes=3, teacher=TinyNet(3))
    table = torch.arange(15, dtype=torch.float32).view(5, 3)
    distiller.set_precomputed_teacher_logits(table)
    rows = distiller.teacher_logits({"image": torch.randn(2, 4), "index": torch.tensor([4, 1])})
    assert torch.equal(rows, table[[4, 1]])
    assert not any("precomputed" in k for k in distiller.state_dict())


def test_set_epoch_and_the_head_width_of_the_baselines():
    cfg = get_cfg()
    cfg.DISTILLER.TYPE = "NONE"
    base = build_distiller(cfg, TinyNet(3), 3, 0)
    base.set_epoch(7)
    assert base.epoch == 7 and base.num_aspects == 0
    makd = build_distiller(load_cfg(None), TinyNet(5), 3, 2)
    assert makd.num_aspects == 2 and type(makd).head_outputs(3, 2) == 5
