"""Optimizers and per-step learning-rate schedules (multistep as the official code, or cosine; optional warmup), and
the backward pass each optimizer steps on (one pass of the summed loss, or DOT's two)."""

from __future__ import annotations

import math

import torch
from torch import nn

from makd.engine.dot_optimizer import DistillationOrientedSGD
from makd.errors import ConfigError


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over the distiller's `learnable_parameters()` (never a frozen teacher), or a plain module's;
    with SOLVER.TRAINER dot, DOT's SGD of two momenta (makd.engine.dot_optimizer)."""
    # Weight decay on every parameter, as the official SGD setup; AdamW follows the same rule for comparability.
    learnable = getattr(model, "learnable_parameters", None)
    params = list(learnable()) if callable(learnable) else [p for p in model.parameters() if p.requires_grad]
    kind = cfg.SOLVER.TYPE.lower()
    if cfg.SOLVER.TRAINER.lower() == "dot":
        if kind != "sgd" or cfg.SOLVER.GRAD_CLIP > 0:
            raise ConfigError(
                "SOLVER.TRAINER dot is DOT's SGD with two momenta: set SOLVER.TYPE SGD and SOLVER.GRAD_CLIP 0 "
                f"(got {cfg.SOLVER.TYPE}, {cfg.SOLVER.GRAD_CLIP})"
            )
        return DistillationOrientedSGD(
            params,
            lr=cfg.SOLVER.LR,
            momentum=cfg.SOLVER.MOMENTUM,
            delta=cfg.SOLVER.DOT.DELTA,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
    if kind == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.SOLVER.LR, momentum=cfg.SOLVER.MOMENTUM, weight_decay=cfg.SOLVER.WEIGHT_DECAY
        )
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=cfg.SOLVER.LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    raise ConfigError(f"SOLVER.TYPE {cfg.SOLVER.TYPE!r} is unknown; use SGD or AdamW")


def backward(optimizer: torch.optim.Optimizer, losses: dict, total: torch.Tensor, scaler) -> None:
    """The gradients `optimizer` steps on: of the summed loss `total` (scaled, then unscaled, with a float16 loss
    scaler), or, for DOT, of the task term and of the distillation terms of `losses` apart."""
    if isinstance(optimizer, DistillationOrientedSGD):
        if scaler.is_enabled():
            raise ConfigError(
                "SOLVER.TRAINER dot does not support float16 loss scaling; use bfloat16 AMP or SOLVER.AMP False"
            )
        optimizer.backward(losses)
    elif scaler.is_enabled():
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()


def lr_factor(cfg, step: int, steps_per_epoch: int) -> float:
    """Multiplier of SOLVER.LR at optimizer step `step` (0-based).

    multistep: LR_DECAY_RATE ** (number of LR_DECAY_STAGES reached by the current epoch).
    cosine: half-cosine from 1 to MIN_LR/LR over the steps after warmup.
    warmup: linear from 1% to 100% over WARMUP_EPOCHS (per step), multiplied in.
    """
    epoch = step // steps_per_epoch
    total = cfg.SOLVER.EPOCHS * steps_per_epoch
    warmup = int(cfg.SOLVER.WARMUP_EPOCHS * steps_per_epoch)
    if cfg.SOLVER.SCHEDULER.lower() == "multistep":
        factor = cfg.SOLVER.LR_DECAY_RATE ** sum(epoch >= stage for stage in cfg.SOLVER.LR_DECAY_STAGES)
    else:
        progress = min(1.0, max(0, step - warmup) / max(1, total - warmup))
        floor = cfg.SOLVER.MIN_LR / cfg.SOLVER.LR if cfg.SOLVER.LR > 0 else 0.0
        factor = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if step < warmup:
        factor *= 0.01 + 0.99 * step / warmup
    return factor


def build_scheduler(cfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """A LambdaLR stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch))
