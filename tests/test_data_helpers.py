"""Builders shared by the tests/test_data_*.py files: tiny image trees written with PIL, and configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from makd.config.defaults import check_cfg, get_cfg


def random_image(seed: int, size: tuple[int, int] = (12, 9), mode: str = "RGB") -> Image.Image:
    """A reproducible noise image of `mode` (size is width, height)."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8), "RGB")
    if mode == "RGB":
        return rgb
    if mode == "P":
        return rgb.quantize(colors=8)
    return rgb.convert(mode)


def write_class_folders(root: Path, classes: dict[str, int], seed: int = 0, ext: str = ".png") -> list[str]:
    """root/<class>/img_<k><ext> for `classes` {name: count}; returns the ids in sorted order."""
    ids = []
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            random_image(seed * 1000 + c * 100 + k).save(root / name / f"img_{k}{ext}")
            ids.append(f"{name}/img_{k}")
    return sorted(ids)


def write_release(root: Path, classes: list[str], per_class: int, seed: int = 0) -> list[str]:
    """Flat `<class>_<label>_<idx>.png` files (the official release layout); returns the ids."""
    root.mkdir(parents=True, exist_ok=True)
    ids = []
    for label, name in enumerate(classes):
        for k in range(per_class):
            stem = f"{name}_{label}_{k}"
            random_image(seed * 1000 + label * 100 + k).save(root / f"{stem}.png")
            ids.append(stem)
    return sorted(ids)


def make_cfg(settings: dict, check: bool = True):
    """Defaults with dotted-key `settings` ({"DATASET.TYPE": "image_folder", ...}), checked and frozen."""
    cfg = get_cfg()
    for key, value in settings.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    if check:
        check_cfg(cfg)
    cfg.freeze()
    return cfg


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)
