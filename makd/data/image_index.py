"""ImageIndex: one split of a dataset as (id, label, image source) rows, and DATASET_TYPES, the layouts that build it.

Every layout (class folders, the official flat-PNG release, torchvision datasets) produces the
same object, so everything downstream (aspect join, datasets, cache, export) has one code path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from makd.data.transforms import pil_to_uint8
from makd.formats.image_decode import read_rgb
from makd.registry import Registry


@dataclass
class ImageIndex:
    """One split: `ids[i]` has class `labels[i]` (0..C-1, named `class_names[label]`).

    Pixels come from `paths[i]` (files) or, when `pixels` is set, from memory: a uint8 array
    [N, H, W, 3] (CIFAR) or a `PackedImages` cache. Plain lists and arrays only, so the index
    pickles into DataLoader workers (and is shared copy-on-write under fork).
    """

    ids: list[str]
    labels: list[int]
    class_names: list[str]
    source: str
    root: str = ""  # folder the ids are relative to (stage 2's --images); "" when there are no files
    paths: list[str] | None = None
    pixels: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.labels) != n or (self.paths is not None and len(self.paths) != n):
            raise ValueError(f"{self.source}: ids, labels and paths differ in length")
        if self.paths is None and self.pixels is None:
            raise ValueError(f"{self.source}: an ImageIndex needs paths or pixels")
        bad = [label for label in self.labels if not 0 <= label < len(self.class_names)]
        if bad:
            raise ValueError(f"{self.source}: label {bad[0]} outside 0..{len(self.class_names) - 1}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self, i: int) -> Image.Image:
        """Image `i` as an RGB PIL image (ImageLoadError naming the file when it cannot be read)."""
        if self.pixels is not None:
            return Image.fromarray(np.asarray(self.pixels[i]))  # uint8 [H, W, 3] -> RGB
        return read_rgb(self.paths[i])

    def load_uint8(self, i: int) -> torch.Tensor:
        """Image `i` as a uint8 tensor [3, H, W] (the training and test transforms' input).

        In-memory pixels come without a copy: a channels-last view of the array (never written to: every
        transform returns new tensors); files are decoded by read_rgb, as everywhere.
        """
        if self.pixels is not None:
            array = np.asarray(self.pixels[i])
            if not array.flags.writeable:  # torch refuses to wrap read-only arrays silently
                array = array.copy()
            return torch.from_numpy(array).permute(2, 0, 1)
        return pil_to_uint8(read_rgb(self.paths[i]))

    def describe(self, i: int) -> str:
        """Where image `i` comes from (its file, or its id for in-memory data), for messages."""
        return self.paths[i] if self.paths is not None else f"{self.source}:{self.ids[i]}"

    def subset(self, positions: Sequence[int]) -> ImageIndex:
        """The rows at `positions`, in that order."""
        positions = [int(p) for p in positions]
        pixels = self.pixels
        if pixels is not None:
            pixels = (
                pixels[np.asarray(positions, dtype=np.int64)]
                if isinstance(pixels, np.ndarray)
                else pixels.take(positions)
            )
        return replace(
            self,
            ids=[self.ids[p] for p in positions],
            labels=[self.labels[p] for p in positions],
            paths=None if self.paths is None else [self.paths[p] for p in positions],
            pixels=pixels,
        )


# name -> builder(cfg) -> (train, test); each module of makd.data.layouts registers its layouts here.
DATASET_TYPES: Registry[Callable[[Any], tuple[ImageIndex, ImageIndex]]] = Registry("DATASET.TYPE")
