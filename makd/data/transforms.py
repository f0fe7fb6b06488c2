"""Train/test image transforms (keyword-only presets, torchvision.transforms.v2 on PIL images).

Train: RandomResizedCrop(IMAGE_SIZE) + horizontal flip; test: Resize(round(IMAGE_SIZE * RESIZE_RATIO))
+ CenterCrop(IMAGE_SIZE); both end in a float tensor [3, H, W] normalised with MEAN/STD.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def shorter_side_size(image_size: int, resize_ratio: float) -> int:
    """Shorter side (pixels) of the test-time Resize, also the shorter side of cached images."""
    size = int(round(image_size * resize_ratio))
    if size < image_size:
        raise ValueError(f"DATASET.RESIZE_RATIO {resize_ratio} shrinks images below IMAGE_SIZE {image_size}; use >= 1")
    return size


def train_transform(*, image_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """PIL RGB image -> float tensor [3, image_size, image_size] (random crop + flip, normalised)."""
    return v2.Compose(
        [v2.RandomResizedCrop(image_size), v2.RandomHorizontalFlip(), *_to_normalized_tensor(mean, std)]
    )


def test_transform(*, image_size: int, resize_ratio: float, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """PIL RGB image -> float tensor [3, image_size, image_size] (shorter side resized, centre crop, normalised)."""
    return v2.Compose(
        [
            v2.Resize(shorter_side_size(image_size, resize_ratio)),
            v2.CenterCrop(image_size),
            *_to_normalized_tensor(mean, std),
        ]
    )


# pytest collects module-level callables named test_*; these are presets, not tests, wherever they are imported.
test_transform.__test__ = False  # type: ignore[attr-defined]
