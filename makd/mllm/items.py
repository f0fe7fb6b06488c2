"""What stage 2 scores: a list of items, each a row id and the pixels to ask about, from one item source.

The extraction loop (makd/mllm/extraction.py) scores, resumes, shards and writes items without knowing what
they are; a source says which items exist, how one is read into an RGB image, what the prompt asks, and what
goes into the partial file's settings and the sidecar. Image level is `ImageFolderItems` (one item per image
file, the one image-id rule); box level is `makd/mllm/box_items.py`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from makd.formats.image_decode import read_rgb
from makd.formats.image_ids import image_id, list_image_files
from makd.mllm.errors import ExtractionError

IMAGE_ID_RULE = "path relative to the image root, POSIX separators, no extension"


@dataclass(frozen=True)
class Item:
    """One row to score: its id in the aspect file and the image file its pixels come from (for messages)."""

    id: str
    path: Path


class ItemSource(Protocol):
    noun: str  # "image" or "box", for messages
    nouns: str  # its plural
    items: list[Item]  # every item of the source, in the order shards slice it

    def read(self, item: Item) -> Image.Image:
        """The RGB image the MLLM is asked about (raises on an unreadable file; the loop records it)."""

    def prompts(self, questions: Sequence[str]) -> list[str]:
        """The texts sent for `questions` (the questions themselves unless the source frames them)."""

    def settings(self) -> dict:
        """What of the source determines the numbers; a resumed run must match (the partial file's header)."""

    def sidecar(self) -> dict:
        """What the sidecar records about the source."""


class ImageFolderItems:
    """Every image file under a folder, one item each, keyed by the one image-id rule."""

    noun, nouns = "image", "images"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ExtractionError(f"--images {self.root}: folder does not exist (check the path)")
        try:
            files = list_image_files(self.root)
        except ValueError as err:
            raise ExtractionError(f"--images {self.root}: {err}") from None
        if not files:
            raise ExtractionError(
                f"--images {self.root}: no image files found (looked for .png, .jpg, ... recursively)"
            )
        self.items = [Item(image_id(f, self.root), f) for f in files]

    def read(self, item: Item) -> Image.Image:
        rgb = read_rgb(item.path)  # the trainer's decoder: both stages see the same pixels (16-bit PNGs included)
        if rgb.width < 1 or rgb.height < 1:
            raise ValueError("image has no pixels")
        return rgb

    def prompts(self, questions: Sequence[str]) -> list[str]:
        return list(questions)

    def settings(self) -> dict:
        return {"image_root": str(self.root.resolve())}

    def sidecar(self) -> dict:
        return {
            "image_root": str(self.root.resolve()),
            "image_id_rule": IMAGE_ID_RULE,
            "num_images_in_folder": len(self.items),
        }
