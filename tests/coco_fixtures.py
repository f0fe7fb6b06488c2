"""Tiny COCO-format detection sets written by the tests: random-pixel PNGs and an instances JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# Category ids deliberately not 1..K (COCO's own skip numbers), so the label mapping is exercised.
CATEGORIES = [{"id": 7, "name": "circle"}, {"id": 3, "name": "square"}, {"id": 12, "name": "triangle"}]


def tiny_coco_dict() -> dict:
    """Three images (ids 5, 9, 11; image 11 has no boxes), four boxes of which one is a crowd region."""
    return {
        "images": [
            {"id": 9, "file_name": "b.png", "width": 80, "height": 60},
            {"id": 5, "file_name": "sub/a.png", "width": 64, "height": 48},
            {"id": 11, "file_name": "c.png", "width": 40, "height": 40},
        ],
        "annotations": [
            {"id": 102, "image_id": 5, "category_id": 7, "bbox": [10, 8, 20, 16], "iscrowd": 0},
            {"id": 101, "image_id": 5, "category_id": 12, "bbox": [0, 0, 64.4, 48], "iscrowd": 0},
            {"id": 200, "image_id": 9, "category_id": 3, "bbox": [30.5, 20, 12, 6]},
            {"id": 201, "image_id": 9, "category_id": 3, "bbox": [1, 1, 30, 30], "iscrowd": 1},
        ],
        "categories": [dict(c) for c in CATEGORIES],
    }


def write_coco(root: Path, data: dict | None = None, seed: int = 0) -> tuple[Path, Path]:
    """Write `data` (default tiny_coco_dict) as root/instances.json and its images under root/images.

    Returns (instances json, images folder). Images get the size their entry says; an entry without a
    name or size gets no file.
    """
    data = tiny_coco_dict() if data is None else data
    images_dir = root / "images"
    rng = np.random.default_rng(seed)
    for entry in data.get("images", []):
        if not entry.get("file_name") or min(entry.get("width", 0), entry.get("height", 0)) <= 0:
            continue  # an entry the reader must refuse; no file can be written for it
        path = images_dir / entry["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(entry["height"], entry["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    images_dir.mkdir(parents=True, exist_ok=True)
    instances = root / "instances.json"
    instances.write_text(json.dumps(data), encoding="utf-8")
    return instances, images_dir
