"""MaKD + X: MaKD's aspect term added to any method X that declares `combines_with_aspects`, as DISTILLER.TYPE
"MaKD_<X>" (MaKD_AT, MaKD_CRD, MaKD_MLKD, ...), generated here for every such method rather than written per pair.

The student's head is C + Q wide. While X trains, a forward hook on the student cuts each output to its C class
logits, so X sees the classifier it expects (its CE, KD terms, features and adaptors unchanged), and keeps the Q
aspect logits of each call; the first call of the step is the recipe's view of batch["image"] (a two-view method
such as MLKD runs it first), and its aspect logits get MaKD's term:
loss_aspect = MaKD.ALPHA x BCE(aspect logits, MaKD.TEMPERATURE-softened P(yes)), over the entries the view policy
supervises (batch["aspect_mask"]), exactly as DISTILLER.TYPE MaKD. X's own terms keep their names and weights (its
class cross-entropy weight included; MaKD.CE_WEIGHT is MaKD's alone). Evaluation and export see all C + Q outputs.
MaKD_KD and MaKD_DKD predate this and stay as they are: their class CE is MaKD's (docs/methods.md).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from makd.distillers.base import DISTILLERS, Distiller
from makd.distillers.losses import aspect_bce, soften_targets
from makd.distillers.makd import checked_aspects


class ClassLogitSplit:
    """Forward hook of a C + Q student: when active, the output becomes its first C columns and the rest is kept."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes, self.active, self.aspect_logits = num_classes, False, []

    def __call__(self, _module: nn.Module, _inputs, output: torch.Tensor):
        if not self.active:
            return None
        self.aspect_logits.append(output[:, self.num_classes :])
        return output[:, : self.num_classes]

    @contextmanager
    def splitting(self):
        self.active, self.aspect_logits = True, []
        try:
            yield self
        finally:
            self.active = False


def with_aspect_term(base: type[Distiller]) -> type[Distiller]:
    """The class of DISTILLER.TYPE "MaKD_<base.name>" (see the module docstring)."""

    class AspectCombination(base):
        name = f"MaKD_{base.name}"
        needs_aspects = True
        loss_weight_keys = {**base.loss_weight_keys, "loss_aspect": "MaKD.ALPHA"}
        add_config = base.add_config
        check_config = base.check_config

        @classmethod
        def from_config(cls, cfg, student, num_classes, num_aspects, teacher=None, **extra):
            split = ClassLogitSplit(num_classes)
            student.register_forward_hook(split)
            with split.splitting():  # the base method probes the student while it builds its adaptors
                distiller = super().from_config(cfg, student, num_classes, num_aspects, teacher, **extra)
            distiller.num_aspects = num_aspects
            distiller.split = split
            distiller.aspect_alpha, distiller.aspect_temperature = cfg.MaKD.ALPHA, cfg.MaKD.TEMPERATURE
            return distiller

        def forward_train(self, batch):
            aspects, mask = checked_aspects(batch)
            with self.split.splitting():
                logits, losses = super().forward_train(batch)
                aspect_logits = self.split.aspect_logits[0]  # the recipe's view: the step's first student call
            targets = soften_targets(aspects.float(), self.aspect_temperature)
            losses["loss_aspect"] = self.aspect_alpha * aspect_bce(aspect_logits.float(), targets, mask)
            return logits, losses

    AspectCombination.__name__ = AspectCombination.__qualname__ = f"AspectCombined{base.__name__}"
    AspectCombination.__doc__ = (
        f"{base.name} plus MaKD's aspect term on a C + Q head (makd.distillers.aspect_combination)."
    )
    return AspectCombination


def register_aspect_combinations() -> list[str]:
    """Register MaKD_<X> for every registered method X with `combines_with_aspects`; returns the names added."""
    added = []
    bases = list(dict.fromkeys(DISTILLERS.get(name) for name in DISTILLERS.names()))
    for base in bases:
        if getattr(base, "combines_with_aspects", False) and not base.needs_aspects:
            name = f"MaKD_{base.name}"
            if name not in DISTILLERS:
                DISTILLERS.register(name)(with_aspect_term(base))
                added.append(name)
    return added
