"""The epoch line says what the epoch trained with: the learning rate its steps used (against the schedule), and
each loss term before its weight with the weight and what sets it (against the sum and the method's losses)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tool_modules import load_tool

from makd.config import load_cfg
from makd.distillers import build_distiller
from makd.engine.optim import lr_factor
from makd.engine.trainer import _loss_line, _loss_part, _lr_part

EPOCH = re.compile(r"^epoch (\d+)/\d+ \| lr (\S+) \| loss (\S+) = 1 x ce (\S+) \+ 2\.5 x aspect (\S+) \|")


def test_each_epoch_shows_the_rates_its_steps_used_and_the_weighted_terms(release_dataset, capsys):
    out = release_dataset["root"] / "cosine"
    opts = ["OUTPUT_DIR", str(out), "DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0", "SOLVER.SCHEDULER",
            "cosine", "SOLVER.WARMUP_EPOCHS", "1", "MaKD.ALPHA", "2.5"]  # fmt: skip
    assert load_tool("our_train").main([str(release_dataset["config"]), *opts]) == 0
    printed = capsys.readouterr().out
    assert "[makd] loss = MaKD.CE_WEIGHT 1 x ce + MaKD.ALPHA 2.5 x aspect" in printed
    lines = [EPOCH.match(line) for line in printed.splitlines() if line.startswith("epoch ")]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    cfg = load_cfg(str(release_dataset["config"]), opts)
    steps = 3  # 24 training images, batch 8
    assert len(lines) == len(rows) == 3 and all(lines)
    for epoch, (line, row) in enumerate(zip(lines, rows)):
        first = cfg.SOLVER.LR * lr_factor(cfg, epoch * steps, steps)
        last = cfg.SOLVER.LR * lr_factor(cfg, epoch * steps + steps - 1, steps)
        assert (row["lr"], row["lr_last"]) == (pytest.approx(first), pytest.approx(last))
        assert line[2] == f"{first:.2e}..{last:.2e}"  # warm-up, then the cosine: the rate moves within an epoch
        assert row["loss_weights"] == {"ce": 1.0, "aspect": 2.5}
        total, ce, bce = float(line[3]), float(line[4]), float(line[5])
        assert total == pytest.approx(ce + 2.5 * bce, abs=2e-4)  # the sum the optimizer minimised
        assert bce == pytest.approx(row["train_loss_aspect"] / 2.5, abs=1e-4) and ce == pytest.approx(
            row["train_loss_ce"], abs=1e-4
        )
    assert rows[0]["lr"] == pytest.approx(0.05 * 0.01)  # the warm-up's first step, not the rate after the epoch


def test_the_line_parts_by_hand():
    row = {"lr": 0.01, "lr_last": 0.01, "train_loss": 1.5, "train_loss_ce": 0.5, "train_loss_aspect": 1.0,
           "train_loss_extra": 0.0, "loss_weights": {"ce": 1.0, "aspect": 4.0}}  # fmt: skip
    assert _lr_part(row) == "lr 1.00e-02" and _lr_part({"lr": 0.01, "lr_last": 0.005}) == "lr 1.00e-02..5.00e-03"
    assert _loss_part(row) == "loss 1.5000 = 1 x ce 0.5000 + 4 x aspect 0.2500 + extra 0.0000"
    assert _loss_part({**row, "loss_weights": {"ce": 0.0, "aspect": 4.0}}).startswith("loss 1.5000 = 0 x ce - + ")
    assert _loss_part({"train_loss": 2.0}) == "loss 2.0000"  # a row of before the weights were recorded


def test_the_start_line_names_what_sets_each_weight():
    cfg = load_cfg(None, ["MaKD.ALPHA", "3.0", "MaKD.CE_WEIGHT", "0.5"])
    distiller = build_distiller(cfg, torch.nn.Linear(4, 2 + 3), 2, 3)
    assert _loss_line(distiller).startswith("loss = MaKD.CE_WEIGHT 0.5 x ce + MaKD.ALPHA 3 x aspect")
    assert "declares no weights" in _loss_line(torch.nn.Linear(2, 2))  # a module without loss_weights
