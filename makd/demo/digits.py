"""A CIFAR-shaped set of real images: scikit-learn's 1,797 handwritten digits (8 x 8, 16 grey levels), written as
32 x 32 RGB PNGs in class folders, with per-class target files shaped like LaViD's.

It exists to measure training settings (LaViD's lambda against the learning rate, docs/health.md) on real images
of CIFAR's size and channel count with the CIFAR recipe, without a download: scikit-learn ships the digits.

Layout of `out/`: train/<digit>/<n>.png and test/<digit>/<n>.png (a stratified split, seeded), and
  class_targets_choice.json  {digit: [[p_1..p_M] x Q]}: Q = 50 questions of M = 5 options, LaViD's chat_50-5 shape
                             (K = 250 targets per class)
  class_targets_yes_no.json  {digit: [p_1..p_Q]}: Q = 50 (K = 50)
Both hold random per-class answers (a Dirichlet(1) distribution per question, a uniform P(yes)), drawn from the seed:
they carry the class identity as a teacher's answers do, but no knowledge about digits. Each has a sidecar saying so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from makd.atomic_files import atomic_write_json
from makd.demo.classification import folder_built_aside, refuse_filled_folder

CHOICE_FILE = "class_targets_choice.json"
YES_NO_FILE = "class_targets_yes_no.json"
QUESTIONS, OPTIONS = 50, 5


def digit_images(size: int = 32) -> tuple[list[Image.Image], np.ndarray]:
    """scikit-learn's digits as `size` x `size` RGB images (bilinear upsampling of the 8 x 8 grey levels) and labels."""
    from sklearn.datasets import load_digits  # late: only this data set needs scikit-learn

    digits = load_digits()
    images = []
    for pixels in digits.images:  # [8, 8] floats in 0..16
        grey = Image.fromarray(np.round(pixels * (255.0 / 16.0)).astype(np.uint8), mode="L")
        images.append(grey.resize((size, size), Image.BILINEAR).convert("RGB"))
    return images, digits.target.astype(np.int64)


def class_targets(seed: int) -> tuple[dict[str, list[list[float]]], dict[str, list[float]]]:
    """Random per-class answers: ({digit: Q x M option distributions}, {digit: Q yes-probabilities})."""
    rng = np.random.default_rng([seed, 7])
    choice = {str(d): rng.dirichlet(np.ones(OPTIONS), size=QUESTIONS).round(6).tolist() for d in range(10)}
    yes_no = {str(d): rng.uniform(0.0, 1.0, size=QUESTIONS).round(6).tolist() for d in range(10)}
    return choice, yes_no


def write_digits(
    out_dir: str | os.PathLike, *, seed: int = 0, test_fraction: float = 0.2, size: int = 32, overwrite: bool = False
) -> dict[str, Any]:
    """Write the set into `out_dir` (built aside, moved into place whole); returns counts and the files written."""
    out_dir = Path(out_dir)
    refuse_filled_folder(out_dir, overwrite, what="digits folder")
    images, labels = digit_images(size)
    rng = np.random.default_rng([seed, 0])
    counts = {"train": 0, "test": 0}
    with folder_built_aside(out_dir) as work:
        for digit in range(10):
            members = rng.permutation(np.flatnonzero(labels == digit))
            cut = int(round(len(members) * test_fraction))
            for split, chosen in (("test", members[:cut]), ("train", members[cut:])):
                folder = work / split / str(digit)
                folder.mkdir(parents=True, exist_ok=True)
                for index in sorted(chosen.tolist()):
                    images[index].save(folder / f"{index}.png")
                counts[split] += len(chosen)
        choice, yes_no = class_targets(seed)
        note = "random per-class answers drawn from the seed (makd.demo.digits): no teacher, no knowledge of digits"
        for name, rows, kind in ((CHOICE_FILE, choice, "multiple_choice"), (YES_NO_FILE, yes_no, "yes_no")):
            atomic_write_json(work / name, rows)
            atomic_write_json(
                work / f"{name}.meta.json",
                {"tool": "makd.demo.digits", "level": "class", "kind": kind, "classes": list(rows), "seed": seed,
                 "note": note},
            )  # fmt: skip
    return {"train": counts["train"], "test": counts["test"], "classes": 10, "files": [CHOICE_FILE, YES_NO_FILE]}
