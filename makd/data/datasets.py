"""AspectDataset: one dict per image (image, class label, aspect targets, position) for training and evaluation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from makd.data.image_index import ImageIndex


class AspectDataset(Dataset):
    """Item i = {"image": transform(image_i) [3, H, W] float, "label": int, "aspects": float32 [Q], "index": i}.

    The item is a dict so that a method or a view policy can add keys (an aspect mask, a flag of
    the view drawn) without changing every consumer; default collation batches dicts key by key.

    `targets` [N, Q] holds the aspect targets in index order. Without targets the aspects are a
    NaN row of length `num_aspects` (a split with no aspect file: metrics skip NaN rows), or an
    empty tensor [0] when `num_aspects` is 0 (the cross-entropy baseline). With targets,
    `num_aspects` 0 means "take Q from targets"; any other value must equal Q.
    """

    def __init__(
        self, index: ImageIndex, transform: Callable | None, targets: np.ndarray | None, num_aspects: int = 0
    ) -> None:
        if targets is not None:
            targets = np.asarray(targets, dtype=np.float32)
            if targets.ndim != 2 or len(targets) != len(index):
                raise ValueError(f"{index.source}: targets must be [{len(index)}, Q], got shape {targets.shape}")
            if num_aspects not in (0, targets.shape[1]):
                raise ValueError(f"{index.source}: targets have {targets.shape[1]} aspects, expected {num_aspects}")
            num_aspects = targets.shape[1]
        self.index, self.transform, self.num_aspects = index, transform, int(num_aspects)
        self.targets = None if targets is None else torch.from_numpy(targets)
        self._no_row = torch.full((self.num_aspects,), float("nan"))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> list[int]:
        return self.index.labels

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        image = self.index.load(i)
        if self.transform is not None:
            image = self.transform(image)
        aspects = self.targets[i] if self.targets is not None else self._no_row.clone()
        return {"image": image, "label": self.index.labels[i], "aspects": aspects, "index": i}
