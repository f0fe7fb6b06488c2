"""The one place where a collated uint8 batch becomes the model's float input, on the training device.

Workers decode, crop and flip uint8 images and collate them as uint8 [B, 3, S, S] (makd/data/transforms.py);
`DevicePreprocess` then, for the whole batch at once on the device the model runs on:

1. copies every tensor there (non_blocking: from pinned memory on CUDA this overlaps the copy with compute);
2. converts the images to float in [0, 1] and normalises them with DATASET.MEAN / STD, by torchvision's own
   `to_dtype(scale=True)` and `normalize`, the ops the former per-sample pipeline ran: the same values bit for
   bit (tests/test_device_batch.py);
3. applies each sample's random-erasing box ("erase" [B, 4], drawn per sample by the seeded transform) as 0;
4. mixes the images as the batch's mixup / CutMix plan says ("mix_plan", drawn by the collate function);
5. optionally lays the images out channels_last (DATASET.CHANNELS_LAST).

The order is the former pipeline's (normalise, erase, then mix), so a run means what it meant before.
Every consumer of a loader (training, evaluation, teacher precompute, run analysis) calls `prepare_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms.v2 import functional as F

from makd.data.batch_mixing import MixPlan


class DevicePreprocess:
    """uint8 batch on the CPU -> float normalised batch on `device` (see the module docstring for the steps)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, channels_last: bool = False) -> None:
        self.mean, self.std, self.channels_last = [float(m) for m in mean], [float(s) for s in std], bool(channels_last)

    @classmethod
    def from_cfg(cls, cfg) -> DevicePreprocess:
        d = cfg.DATASET
        return cls(d.MEAN, d.STD, channels_last=d.CHANNELS_LAST)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> float32 [B, 3, H, W] normalised (float input is taken as already normalised)."""
        if images.dtype == torch.uint8:
            images = F.normalize(F.to_dtype(images, torch.float32, scale=True), self.mean, self.std, inplace=True)
        return images

    def __call__(self, batch: dict, device: torch.device) -> dict:
        batch = to_device(batch, device)
        # "image_strong": the strong view of two-view methods, normalised and erased the same way (never mixed)
        for key, erase_key in (("image", "erase"), ("image_strong", "erase_strong")):
            if key not in batch:
                continue
            images = self.images(batch[key])
            if erase_key in batch:
                images = images.masked_fill(erase_mask(batch[erase_key], images.shape[-2:]), 0.0)
            plan = batch.get("mix_plan")
            if key == "image" and isinstance(plan, MixPlan):
                images = plan.apply(images, batch["mix_index"])
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            batch[key] = images
        return batch


def to_device(batch: dict, device: torch.device) -> dict:
    """Every tensor of `batch` on `device` (non-blocking); other values as they are."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def erase_mask(boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """bool [B, 1, H, W]: True inside each sample's box (top, left, height, width); a 0-height box is empty.

    Built from index comparisons rather than a loop over samples, so it is one kernel per step on a GPU.
    """
    height, width = int(size[0]), int(size[1])
    top, left, box_h, box_w = (boxes[:, k].view(-1, 1, 1, 1) for k in range(4))
    rows = torch.arange(height, device=boxes.device).view(1, 1, -1, 1)
    cols = torch.arange(width, device=boxes.device).view(1, 1, 1, -1)
    return (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)


def prepare_batch(batch: dict, dataset, device: torch.device) -> dict:
    """`batch` from a loader of `dataset`, ready for the model: the dataset's DevicePreprocess when it has one
    (every AspectDataset from build_data), else only moved to `device` (datasets that yield float images)."""
    preprocess = getattr(dataset, "preprocess", None)
    return preprocess(batch, device) if preprocess is not None else to_device(batch, device)
