"""AspectDataset: one dict per image (image, class label, aspect targets, mask, view, position)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from makd.data.image_index import ImageIndex
from makd.data.transforms import WHOLE_IMAGE, sample_seed
from makd.data.views import ViewPolicy


class AspectDataset(Dataset):
    """Item i = {"image": uint8 [3, S, S], "label": int, "aspects": float32 [Q], "aspect_mask": float32 [Q],
    "view": {"hflip": bool, "crop_area": float}, "index": i, "epoch": int} (+ "erase": int64 [4] when the
    transform draws random-erasing boxes; + "image_strong" (and "erase_strong") with a `strong_transform`).

    The item is a dict so that a method or a view policy can add keys without changing every consumer.
    `transform` maps the uint8 tensor [3, H, W] of ImageIndex.load_uint8 to a tensor, or to (tensor, View)
    when it draws a view (TrainTransform); `preprocess` (a DevicePreprocess) is what turns this dataset's
    collated batches into model input on the device (makd/data/device_batch.py; None: the images are the
    model input already). The transform's randomness comes from torch's generator seeded by (seed, epoch, i)
    around the call (the global state is restored after), so an item depends only on those three: the same
    batches for any DataLoader NUM_WORKERS. The epoch is `set_epoch`'s, or the one of an (epoch, i) key:
    the trainer's sampler yields such keys so that persistent DataLoader workers, which keep the copy of the
    dataset they started with, still see each epoch. `strong_transform` (two-view methods such as MLKD) draws a
    second view of the same image right after the first, from the same seeded generator: the first view is the one
    a run without it draws.

    `targets` [N, Q] holds the aspect targets in index order. Without targets the aspects are a
    NaN row of length `num_aspects` (a split with no aspect file: metrics skip NaN rows), or an
    empty tensor [0] when `num_aspects` is 0 (the cross-entropy baseline). With targets,
    `num_aspects` 0 means "take Q from targets"; any other value must equal Q. `flipped_targets`
    [N, Q] are the teacher's rows for the mirrored images (used on mirrored views); `views` says
    what a view does to the targets (None: nothing, mask = finite targets). `collate_fn` is what a
    DataLoader of this dataset should collate with (a BatchMixer for mixup/CutMix/smoothing).
    """

    def __init__(
        self,
        index: ImageIndex,
        transform: Callable | None,
        targets: np.ndarray | None,
        num_aspects: int = 0,
        *,
        seed: int = 0,
        views: ViewPolicy | None = None,
        flipped_targets: np.ndarray | None = None,
        collate_fn: Callable | None = None,
        preprocess: Callable | None = None,
        strong_transform: Callable | None = None,
    ) -> None:
        if targets is not None:
            targets = np.asarray(targets, dtype=np.float32)
            if targets.ndim != 2 or len(targets) != len(index):
                raise ValueError(f"{index.source}: targets must be [{len(index)}, Q], got shape {targets.shape}")
            if num_aspects not in (0, targets.shape[1]):
                raise ValueError(f"{index.source}: targets have {targets.shape[1]} aspects, expected {num_aspects}")
            num_aspects = targets.shape[1]
        if flipped_targets is not None:
            flipped_targets = np.asarray(flipped_targets, dtype=np.float32)
            if targets is None or flipped_targets.shape != targets.shape:
                raise ValueError(f"{index.source}: flipped targets must have the targets' shape")
        self.index, self.transform, self.num_aspects = index, transform, int(num_aspects)
        self.targets = None if targets is None else torch.from_numpy(targets)
        self.flipped_targets = None if flipped_targets is None else torch.from_numpy(flipped_targets)
        self.seed, self.epoch, self.views = int(seed), 0, views
        self.collate_fn = collate_fn or default_collate
        self.preprocess = preprocess
        self.strong_transform = strong_transform
        self._no_row = torch.full((self.num_aspects,), float("nan"))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> list[int]:
        return self.index.labels

    def with_transform(self, transform: Callable | None) -> AspectDataset:
        """The same images, stored targets and device step under `transform`, with no view policy or batch mixing.

        For scoring the training split with the evaluation transform (tools/eval.py --split train).
        """
        targets = None if self.targets is None else self.targets.numpy()
        return AspectDataset(
            self.index, transform, targets, self.num_aspects, seed=self.seed, preprocess=self.preprocess
        )

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the next pass: part of every sample's augmentation seed (and of the batch mixer's)."""
        self.epoch = int(epoch)
        if hasattr(self.collate_fn, "set_epoch"):
            self.collate_fn.set_epoch(epoch)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, i = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))
        image = self.index.load_uint8(i)
        view, strong = WHOLE_IMAGE, None
        if self.transform is not None:
            # torch.manual_seed would also seed every CUDA device (~0.3 ms); the transforms draw on the CPU only.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(sample_seed(self.seed, epoch, i))
                out = self.transform(image)
                strong = self.strong_transform(image) if self.strong_transform is not None else None
            image, view = out if isinstance(out, tuple) else (out, WHOLE_IMAGE)
        aspects = self.targets[i] if self.targets is not None else self._no_row.clone()
        if self.views is not None:
            flipped = self.flipped_targets[i] if self.flipped_targets is not None else None
            aspects, mask = self.views.apply(aspects, view, flipped)
        else:
            mask = torch.isfinite(aspects).to(torch.float32)
        item = {
            "image": image,
            "label": self.index.labels[i],
            "aspects": aspects,
            "aspect_mask": mask,
            "view": view.as_item(),
            "index": i,
            "epoch": epoch,
        }
        if view.erase is not None:
            item["erase"] = torch.tensor(view.erase, dtype=torch.int64)
        if strong is not None:
            strong_image, strong_view = strong if isinstance(strong, tuple) else (strong, WHOLE_IMAGE)
            item["image_strong"] = strong_image
            if strong_view.erase is not None:
                item["erase_strong"] = torch.tensor(strong_view.erase, dtype=torch.int64)
        return item
