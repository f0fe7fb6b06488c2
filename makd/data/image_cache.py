"""The optional uint8 image cache (DATASET.CACHE_IMAGES): decode every image once, keep it pre-resized in RAM.

Each image is stored with its shorter side reduced to the test-time Resize size (never enlarged),
by the very same resize the test transform applies, so the test pipeline's output is bit-identical
with and without the cache (a second Resize to the same size is the identity) and training crops
come from an image that is at most that size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
from PIL import Image
from torchvision.transforms.v2 import functional as F

from makd.data.image_index import ImageIndex


class PackedImages:
    """Variable-size uint8 images [H_i, W_i, 3] in one flat buffer.

    One big array instead of N small objects: forked DataLoader workers share it without touching
    (and so copying) per-image refcounts, and it pickles as a single block.
    """

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray, shapes: np.ndarray) -> None:
        self.buffer, self.offsets, self.shapes = buffer, offsets, shapes  # [total] uint8, [N+1] int64, [N, 2] int64

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray]) -> PackedImages:
        sizes = np.array([a.size for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        buffer = np.empty(int(offsets[-1]), dtype=np.uint8)
        for a, start, size in zip(arrays, offsets[:-1], sizes):
            buffer[start : start + size] = a.reshape(-1)
        shapes = np.array([a.shape[:2] for a in arrays], dtype=np.int64).reshape(-1, 2)
        return cls(buffer, offsets, shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes)

    def __getitem__(self, i: int) -> np.ndarray:
        height, width = (int(v) for v in self.shapes[i])
        return self.buffer[self.offsets[i] : self.offsets[i + 1]].reshape(height, width, 3)

    def take(self, positions: Sequence[int]) -> PackedImages:
        return PackedImages.from_arrays([self[int(p)] for p in positions])


def shrink(image: Image.Image, shorter_side: int) -> Image.Image:
    """`image` with its shorter side reduced to `shorter_side` (aspect kept), unchanged when already smaller."""
    if min(image.size) <= shorter_side:
        return image
    return F.resize(image, shorter_side)  # the test transform's own Resize, so re-applying it is a no-op


def cache_images(index: ImageIndex, shorter_side: int, num_threads: int | None = None) -> ImageIndex:
    """`index` with every image decoded, shrunk to `shorter_side` and held as uint8 in RAM.

    Indexes already in memory (CIFAR) are returned as they are. Decoding runs in threads (PIL
    releases the GIL while decoding and resizing); a corrupt file raises ImageLoadError here, at start.
    """
    if index.pixels is not None:
        return index
    threads = num_threads or min(8, os.cpu_count() or 1)

    def decode(i: int) -> np.ndarray:
        return np.asarray(shrink(index.load(i), shorter_side), dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        arrays = list(pool.map(decode, range(len(index))))
    return replace(index, pixels=PackedImages.from_arrays(arrays), source=f"{index.source} (cached)")
