"""TrainState: everything `--resume` needs to continue a run to the same result as an unbroken one.

One object holds the distiller (all its trainable state: the student and any module of the method,
not a frozen teacher, which is rebuilt from its own file), the optimizer, the schedule, the AMP loss
scaler, the epoch, the history of epoch rows, the global step, the training time and the config.
`to_checkpoint` / `restore` are the only places the checkpoint layout is written and read;
makd.engine.checkpoint puts it in a file.

Checkpoint layout (a dict, torch.save'd):
  "model"            student state_dict (keys without "student."): read by eval.py, student_state_dict(),
                     DISTILLER.STUDENT_PRETRAINED, and checkpoints of makd <= 0.1 hold only this
  "distiller_extra"  every other distiller key except "teacher.*" (a method's own modules / buffers)
  "optimizer", "scheduler", "scaler", "epoch", "step", "history", "train_seconds", "rng", "config",
  and metadata: "num_classes", "num_aspects", "student", "distiller", "class_names", "makd_version".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

import makd
from makd.engine.reproducibility import rng_states, set_rng_states
from makd.errors import MakdError, one_line

TEACHER_PREFIX = "teacher."  # a frozen teacher's weights come from DISTILLER.TEACHER_CHECKPOINT, not from here
STUDENT_PREFIX = "student."


class CheckpointError(MakdError):
    """A checkpoint file is missing, unreadable, or does not fit the configured run."""


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state_dict holding NaN or infinity (weights and buffers)."""
    return [
        name
        for name, value in state.items()
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()
    ]


def finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass
class TrainState:
    """The resumable state of a run. `epoch` = number of finished epochs; `history` one row per finished epoch."""

    distiller: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    config: str  # the resolved config as YAML (cfg.dump())
    metadata: dict[str, Any] = field(default_factory=dict)  # num_classes, class_names, student name, ...
    epoch: int = 0
    step: int = 0  # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0

    def trainable_state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(student state_dict, the distiller's other non-teacher entries)."""
        student, extra = {}, {}
        for key, value in self.distiller.state_dict().items():
            if key.startswith(STUDENT_PREFIX):
                student[key[len(STUDENT_PREFIX) :]] = value
            elif not key.startswith(TEACHER_PREFIX):
                extra[key] = value
        return student, extra

    def nonfinite_entries(self) -> list[str]:
        """Weights and buffers (BatchNorm running statistics included) that are NaN or infinite."""
        student, extra = self.trainable_state()
        return [f"student.{k}" for k in nonfinite_tensors(student)] + nonfinite_tensors(extra)

    def to_checkpoint(self) -> dict[str, Any]:
        student, extra = self.trainable_state()
        return {
            "model": student,
            "distiller_extra": extra,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "rng": rng_states(),
            "config": self.config,
            "makd_version": makd.__version__,
            **self.metadata,
        }

    def restore(self, checkpoint: dict[str, Any], where: str, steps_per_epoch: int) -> None:
        """Load a checkpoint made by `to_checkpoint` (or by makd <= 0.1: student weights under "model")."""
        weights = {STUDENT_PREFIX + k: v for k, v in checkpoint["model"].items()}
        weights.update(checkpoint.get("distiller_extra", {}))
        missing, unexpected = self.distiller.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not k.startswith(TEACHER_PREFIX)]
        if missing or unexpected:
            wrong = ", ".join((missing + unexpected)[:4])
            raise CheckpointError(
                f"{where} does not fit the configured distiller (missing or unexpected: {wrong}); resume with the "
                "config it was trained with"
            )
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            if checkpoint.get("scaler"):  # empty when the loss scaler is off (CPU, bfloat16, no AMP)
                self.scaler.load_state_dict(checkpoint["scaler"])
        except (ValueError, KeyError, RuntimeError) as err:  # parameter groups of another model
            raise CheckpointError(
                f"{where}: its optimizer state does not fit the configured distiller ({one_line(str(err))[:160]}); "
                "resume with the config and makd version it was trained with"
            ) from None
        self.epoch = int(checkpoint["epoch"])
        self.step = int(checkpoint.get("step", self.epoch * steps_per_epoch))
        self.history = list(checkpoint["history"])
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))
        set_rng_states(checkpoint["rng"])
