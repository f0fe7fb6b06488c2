"""The task contract of the one trainer and the TASKS registry: what differs between tasks (config key TASK).

The trainer (makd.engine.trainer) owns everything a run has whatever it learns: the run folder, checkpoints and
exact resume, the epoch loop and its seeding, logging, DDP, divergence checks and summary.json. A task owns
its data, its model (a module with `.student`, the part exported and checkpointed under "model", and
`forward(batch) -> (outputs, {loss name: scalar})`), its evaluation and the metric that selects the best epoch.
The tasks (classification, detection) are the modules of makd.tasks, each a Task subclass registered in TASKS;
the engine names none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from makd.engine.distributed import DistInfo
from makd.errors import ConfigError
from makd.registry import Registry


def move_to(value: Any, device: torch.device) -> Any:
    """Tensors of a batch (inside dicts, lists and tuples, as detection targets are) on `device`."""
    if torch.is_tensor(value):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: move_to(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(move_to(v, device) for v in value)
    return value


class Task:
    """One task of the trainer. `build` fills the attributes below; the trainer makes the loaders from them."""

    name = ""
    metric = ""  # the evaluation key that selects the best epoch (test_<metric> / val_<metric> in the history)
    finite_keys: tuple[str, ...] = ()  # evaluation keys that must be finite for an epoch to be saved or best
    summary_line_keys: tuple[str, ...] = ()  # shown on the "[makd] summary" line at the end
    eval_collate = None  # collate_fn of the evaluation loaders (None: torch's default)

    def __init__(self, cfg, info: DistInfo, device: torch.device) -> None:
        self.cfg, self.info, self.device = cfg, info, device
        self.model: nn.Module | None = None  # what the optimizer trains; `.student` is the exported part
        # with collate_fn and set_epoch(epoch); training items are fetched by (epoch, index) keys
        # (makd.engine.trainer.EpochShuffleSampler), evaluation items by index
        self.train_set: Dataset | None = None
        self.eval_sets: dict[str, Dataset] = {}  # "test" (and "val" when there is one)
        self.metadata: dict[str, Any] = {}  # stored in every checkpoint

    def build(self) -> None:
        raise NotImplementedError

    def prepare(self, eval_loaders: dict) -> None:
        """Once per process start, after the loaders exist (classification: the CNN teacher's pass)."""

    def batch_to_device(self, batch, dataset: Dataset):
        """A training batch from the loader, ready for the model on the training device."""
        return move_to(batch, self.device)

    def batch_counts(self, outputs, batch) -> tuple[int, int | None]:
        """(samples in the batch, how many the training outputs got right, or None when that means nothing)."""
        raise NotImplementedError

    def evaluate(self, split: str, loader) -> dict[str, float]:
        """Metrics of the model on one split, keyed without the split prefix (the trainer adds `<split>_`)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The middle of the "[makd] run ..." line: data sizes and model."""
        raise NotImplementedError

    def epoch_parts(self, row: dict) -> list[str]:
        """The task's parts of an epoch's log line (its training accuracy and evaluation)."""
        return []

    def finish(self, run_dir: Path, logger, step: int) -> None:
        """After the last epoch, on the main process: the task's extra run files (aspect metrics, ...)."""

    def summary(self, history: list[dict], train_seconds: float) -> dict[str, Any]:
        raise NotImplementedError

    def export(self, path: Path) -> None:
        """Write the student-only export (student.pth)."""
        raise NotImplementedError

    # --- what the training-health checks read (makd.engine.health) ----------------------------------------------
    own_losses: tuple[str, ...] = ()  # the task's own terms besides the class terms (never named as swamping them)

    def class_terms(self) -> tuple[str, ...]:
        """The loss terms whose targets are the classes (the labels, a CNN teacher's class logits): the other terms'
        gradients are compared with their sum's. () turns the comparison off."""
        return ()

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every loss term reaches (the student without its output layers): where the terms'
        gradients are compared. [] turns the comparison off."""
        return []

    def health_counts(self, outputs, batch) -> dict[str, float]:
        """Numbers of one training batch, summed over the epoch by the health checks (classification: the unweighted
        class loss, correct predictions and samples; detection: positive proposals, boxes and images)."""
        return {}

    def chance_levels(self) -> dict[str, float]:
        """What a student that learned nothing scores on the training split ({} when the task has no such level):
        "class_loss" (the entropy of the labels), "largest_share" (of one class), "num_classes"."""
        return {}


# TASK value -> Task subclass; each module of makd.tasks registers its task here (`import makd.tasks`, as the training
# commands do, registers them all).
TASKS: Registry[type[Task]] = Registry("TASK")


def task_of(cfg, info: DistInfo, device: torch.device) -> Task:
    """The task object of cfg.TASK, from the TASKS registry."""
    if cfg.TASK not in TASKS:
        if not TASKS.names():
            raise ConfigError(f"TASK {cfg.TASK!r}: no task is registered; import makd.tasks before training")
        raise ConfigError(f"TASK {cfg.TASK!r} is unknown; use one of {', '.join(TASKS.names())}")
    return TASKS.get(cfg.TASK)(cfg, info, device)
