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
import torch
from tqdm import tqdm

from makd.data.image_check import bad_images_error
from makd.data.image_index import ImageIndex
from makd.data.transforms import resize_shorter_side
from makd.formats.image_decode import ImageLoadError


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


def shrink(image: torch.Tensor, shorter_side: int) -> torch.Tensor:
    """uint8 [3, H, W] with its shorter side reduced to `shorter_side` (aspect kept), unchanged when already smaller."""
    if min(image.shape[-2:]) <= shorter_side:
        return image
    return resize_shorter_side(image, shorter_side)  # the test transform's own Resize: re-applying it is a no-op


def cache_images(index: ImageIndex, shorter_side: int, num_threads: int | None = None) -> ImageIndex:
    """`index` with every image decoded, shrunk to `shorter_side` and held as uint8 in RAM."""
    return cache_splits([index], shorter_side, num_threads)[0]


def cache_splits(
    indexes: Sequence[ImageIndex | None], shorter_side: int, num_threads: int | None = None, progress: bool = True
) -> list[ImageIndex | None]:
    """Each index of `indexes` cached as by cache_images (None stays None); this pass is also the image check.

    Indexes already in memory (CIFAR) are returned as they are. Decoding runs in threads (PIL
    releases the GIL while decoding and resizing). Every file is tried; when some cannot be read,
    one ImageLoadError names the first, its problem and how many more there are (of all the splits).
    """
    threads = num_threads or min(8, os.cpu_count() or 1)
    todo = [ix for ix in indexes if ix is not None and ix.pixels is None]

    def decode(item: tuple[ImageIndex, int]) -> np.ndarray | str:
        index, i = item
        try:
            return shrink(index.load_uint8(i), shorter_side).permute(1, 2, 0).numpy()  # [H, W, 3]
        except ImageLoadError as err:
            return str(err)

    decoded: dict[int, list[np.ndarray | str]] = {}
    total = sum(len(ix) for ix in todo)
    # disable=None: a bar on a terminal only, so logs and captured output stay clean.
    with (
        ThreadPoolExecutor(max_workers=threads) as pool,
        tqdm(total=total, desc="caching images", unit="img", disable=None if progress else True) as bar,
    ):
        for ix in todo:
            decoded[id(ix)] = []
            for result in pool.map(decode, ((ix, i) for i in range(len(ix)))):
                decoded[id(ix)].append(result)
                bar.update(1)
    problems = [r for results in decoded.values() for r in results if isinstance(r, str)]
    if problems:
        raise bad_images_error(problems, total)
    return [
        ix
        if ix is None or ix.pixels is not None
        else replace(ix, pixels=PackedImages.from_arrays(decoded[id(ix)]), source=f"{ix.source} (cached)")
        for ix in indexes
    ]
