"""The distiller contract: training returns class logits and a dict of named losses the trainer sums."""

from __future__ import annotations

import torch
from torch import nn


class Distiller(nn.Module):
    """Wraps the student. Subclasses implement `forward_train`.

    `forward(images, labels, aspects)` is `forward_train` so that DistributedDataParallel, which
    only hooks `forward`, sees the training pass.
    """

    def __init__(self, student: nn.Module, num_classes: int, num_aspects: int) -> None:
        super().__init__()
        self.student = student
        self.num_classes = num_classes
        self.num_aspects = num_aspects

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor, aspects: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def forward(self, images, labels, aspects):
        return self.forward_train(images, labels, aspects)

    @torch.no_grad()
    def forward_test(self, images: torch.Tensor) -> torch.Tensor:
        """All student outputs [B, C + Q]; callers score only the first C (the class logits)."""
        return self.student(images)
