"""The distiller contract: training returns class logits and a dict of named losses the trainer sums."""

from __future__ import annotations

import torch
from torch import nn


class Distiller(nn.Module):
    """Wraps the student. Subclasses implement `forward_train(batch)`.

    `batch` is the collated dict of the training dataset: "image" [B, 3, H, W], "label" [B] int64,
    "aspects" [B, Q] float (NaN where an image has no row), "index" [B] (positions in the split),
    plus any keys a view policy adds. `forward(batch)` is `forward_train` so that
    DistributedDataParallel, which only hooks `forward`, sees the training pass.
    """

    def __init__(self, student: nn.Module, num_classes: int, num_aspects: int) -> None:
        super().__init__()
        self.student = student
        self.num_classes = num_classes
        self.num_aspects = num_aspects

    def forward_train(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(class logits [B, C], {loss_name: scalar tensor}); the trainer sums the losses."""
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.forward_train(batch)

    @torch.no_grad()
    def forward_test(self, images: torch.Tensor) -> torch.Tensor:
        """All student outputs [B, C + Q]; callers score only the first C (the class logits)."""
        return self.student(images)
