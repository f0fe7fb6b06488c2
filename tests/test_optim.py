"""Learning-rate schedules: the official multistep, cosine, and warmup."""

from __future__ import annotations

import pytest
import torch

from makd.config import load_cfg
from makd.engine.optim import build_optimizer, build_scheduler, lr_factor


def test_multistep_matches_the_official_schedule():
    cfg = load_cfg(None)
    steps = 10
    assert lr_factor(cfg, 149 * steps + 9, steps) == 1.0
    assert lr_factor(cfg, 150 * steps, steps) == pytest.approx(0.1)
    assert lr_factor(cfg, 180 * steps, steps) == pytest.approx(0.01)
    assert lr_factor(cfg, 239 * steps, steps) == pytest.approx(0.001)


def test_cosine_with_warmup():
    cfg = load_cfg(
        None,
        [
            "SOLVER.SCHEDULER",
            "cosine",
            "SOLVER.EPOCHS",
            "10",
            "SOLVER.WARMUP_EPOCHS",
            "2",
            "SOLVER.MIN_LR",
            "0.001",
            "SOLVER.LR",
            "0.1",
        ],
    )
    steps = 5
    assert lr_factor(cfg, 0, steps) == pytest.approx(0.01)
    assert lr_factor(cfg, 5, steps) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(cfg, 10, steps) == pytest.approx(1.0)
    assert lr_factor(cfg, 30, steps) == pytest.approx(0.01 + 0.99 * 0.5)  # half way through the cosine
    assert lr_factor(cfg, 50, steps) == pytest.approx(0.01)  # floor MIN_LR / LR


def test_scheduler_drives_the_optimizer():
    cfg = load_cfg(None, ["SOLVER.LR_DECAY_STAGES", "[1]", "SOLVER.EPOCHS", "2", "SOLVER.TYPE", "AdamW"])
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=3)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.01] * 3 + [0.001] * 3)
