"""The distiller contract: what a method declares, the optional frozen teacher, and forward_train(batch).

A method is one module in this package: a Distiller subclass registered in DISTILLERS by name, whose
class attributes say what it needs (aspect rows, class-level targets, a CNN teacher) and how wide the
student head is, with its own config group (`add_config(cfg)`, detectron2's add_*_config style) and
checks (`check_config(cfg)`). The package imports every module in it, so nothing else lists methods.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from makd.registry import Registry

DISTILLERS: Registry = Registry("distiller")


def linear_warmup(epoch_number: int, warmup: int) -> float:
    """min(epoch_number / warmup, 1) for the 1-based epoch; warmup 0 = full weight from the start (mdistiller's
    warm-up of DKD's and ReviewKD's distillation terms)."""
    return 1.0 if warmup <= 0 else min(epoch_number / warmup, 1.0)


def warmed_up_weights(
    weights: dict[str, tuple[float, str]], terms: tuple[str, ...], factor: float
) -> dict[str, tuple[float, str]]:
    """Distiller.loss_weights with `terms` times a warm-up `factor`, named in their key; unchanged at full weight."""
    if factor == 1.0:
        return weights
    return {
        name: (weight * factor, f"{key} x warm-up {factor:g}") if name in terms else (weight, key)
        for name, (weight, key) in weights.items()
    }


class Distiller(nn.Module):
    """Wraps the student (and an optional frozen teacher). Subclasses implement `forward_train(batch)`.

    `batch` is the collated dict of the training dataset: "image" [B, 3, H, W], "label" [B] int64,
    "aspects" [B, Q] float (NaN where an image has no row), "index" [B] (positions in the split),
    plus any keys a view policy adds (e.g. "aspect_mask" [B, Q] in {0, 1}) and, for a method that declares
    needs_strong_view, "image_strong" [B, 3, H, W] (DATASET.AUGMENT.STRONG). `forward(batch)` is
    `forward_train` so that DistributedDataParallel, which only hooks `forward`, sees the training pass.
    """

    # What the method declares (read by the config checks, the data builder and the trainer).
    name: str = ""  # the canonical DISTILLER.TYPE, as shown in messages and summaries
    needs_aspects: bool = False  # trains on the stage-2 aspect rows; the head has C + Q outputs
    needs_class_targets: bool = False  # trains on per-class target rows (LaViD: a [C, K] table from its own file)
    needs_teacher: bool = False  # needs a CNN teacher (DISTILLER.TEACHER + DISTILLER.TEACHER_CHECKPOINT)
    needs_train_labels: bool = False  # keeps state per training image (CRD's memory): gets the split's labels
    needs_strong_view: bool = False  # trains on a second, strongly augmented view too: batch["image_strong"]
    combines_with_aspects: bool = False  # "MaKD_<name>" adds MaKD's aspect term to it (aspect_combination.py)
    # Each loss term's weight key (loss name -> dotted config key), so a training-health finding names the key to
    # change (makd.engine.health); a subclass adds its own terms to its parent's: {**Parent.loss_weight_keys, ...}.
    loss_weight_keys: dict[str, str] = {}
    # The terms whose targets are the classes (the labels; a CNN teacher's class logits in the KD family): the health
    # checks compare every other term's gradient with their sum's, so KD's 0.9 x KL next to 0.1 x CE is no finding.
    class_terms: tuple[str, ...] = ("loss_ce",)

    def __init__(
        self, student: nn.Module, num_classes: int, num_aspects: int = 0, teacher: nn.Module | None = None
    ) -> None:
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise ValueError(f"distiller {self.name or type(self).__name__} needs a teacher")
        self.student = student
        self.num_classes = num_classes
        self.num_aspects = num_aspects if self.needs_aspects else 0
        self.epoch = 0  # 0-based epoch being trained, set by the trainer through set_epoch
        self.loss_weight_values: dict[str, float] = {}  # loss name -> its weight key's value (build_distiller)
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        # [N, C] teacher logits per training image (DISTILLER.TEACHER_PRECOMPUTE). A plain attribute, not a
        # buffer: never in checkpoints (recomputed on resume) and never broadcast by DDP at every step.
        self.precomputed_teacher_logits: torch.Tensor | None = None

    # --- declarations -------------------------------------------------------------------------------
    @classmethod
    def head_outputs(cls, num_classes: int, num_aspects: int) -> int:
        """Width of the student's final Linear: C, or C + Q for methods that train on aspects."""
        return num_classes + num_aspects if cls.needs_aspects else num_classes

    @staticmethod
    def add_config(cfg) -> None:
        """Add the method's own config group to `cfg` (idempotent); the base adds nothing."""

    @staticmethod
    def check_config(cfg) -> None:
        """Raise ConfigError (one line) on a bad value of the method's keys; the base checks nothing."""

    @classmethod
    def from_config(cls, cfg, student: nn.Module, num_classes: int, num_aspects: int, teacher=None) -> Distiller:
        raise NotImplementedError

    # --- training -----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Distiller:
        """Switch the student's mode; the teacher stays in eval mode (frozen BatchNorm, no dropout) always."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def learnable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the optimizer gets: everything trainable outside the teacher."""
        for name, param in self.named_parameters():
            if param.requires_grad and not name.startswith("teacher."):
                yield param

    def set_epoch(self, epoch: int) -> None:
        """The trainer calls this before each epoch with the 0-based epoch (DKD's warm-up reads it)."""
        self.epoch = int(epoch)

    def set_precomputed_teacher_logits(self, logits: torch.Tensor) -> None:
        """Use these [N, C] logits (row = batch["index"]) instead of running the teacher on each batch."""
        self.precomputed_teacher_logits = logits

    @torch.no_grad()
    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's class logits [B, C] for the batch: precomputed rows, or the teacher on batch["image"]."""
        if self.precomputed_teacher_logits is not None:
            index = batch["index"].to(self.precomputed_teacher_logits.device)
            return self.precomputed_teacher_logits[index]
        if self.teacher is None:
            raise RuntimeError(f"distiller {type(self).__name__} has no teacher")
        return self.teacher(batch["image"])[:, : self.num_classes]

    def first_step_notes(self, lr: float, momentum: float) -> dict:
        """Numbers a method knows about its own stability, read by the training-health checks after the first
        training forward (LaViD: its head's step against the divergence limit); "stable_below" maps a weight key to
        the largest value that trains at this lr. The base has none."""
        return {}

    def forward_train(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(class logits [B, C], {loss_name: scalar tensor}); the trainer sums the losses."""
        raise NotImplementedError

    def loss_weights(self) -> dict[str, tuple[float, str]]:
        """{loss name: (weight, its config key)} of the terms forward_train returns, each term being that weight times
        its own loss (CE, BCE, KL, ...), so the epoch line can show both: the values of `loss_weight_keys` that
        build_distiller read from the config (a method whose weight changes with the epoch, DKD's warm-up, adjusts
        them). A term not listed is shown as it is returned."""
        return {
            name: (self.loss_weight_values[name], key)
            for name, key in self.loss_weight_keys.items()
            if name in self.loss_weight_values
        }

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.forward_train(batch)

    @torch.no_grad()
    def forward_test(self, images: torch.Tensor) -> torch.Tensor:
        """All student outputs [B, C + Q]; callers score only the first C (the class logits)."""
        return self.student(images)
