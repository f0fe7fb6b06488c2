"""Shared fixtures: tiny image datasets in tmp_path, built with PIL (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from makd.formats.aspect_files import write_aspect_file

# Tiny tensors: one thread avoids oversubscription overhead that made tests up to 50x slower on 2 shared cores.
torch.set_num_threads(1)
# The trainer's and stage 2's automatic thread count (makd.data.cpu_threads) take OMP_NUM_THREADS as given: no test
# (nor any command a test starts) measures the machine unless it asks to, and every run uses one thread.
os.environ["OMP_NUM_THREADS"] = "1"


def draw_image(rng: np.random.Generator, label: int, size: int = 24) -> Image.Image:
    """A small RGB image whose mean colour depends on the label, so a tiny net can learn it."""
    base = np.array([(label * 70) % 256, (label * 130 + 60) % 256, (label * 200 + 120) % 256], dtype=np.float32)
    pixels = base + rng.normal(0, 40, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_release_split(root: Path, classes: list[str], per_class: int, seed: int) -> list[str]:
    """Flat PNG folder in the official release layout `<class>_<label>_<idx>.png`; returns the ids."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ids = []
    for label, name in enumerate(classes):
        for idx in range(per_class):
            stem = f"{name}_{label}_{idx}"
            draw_image(rng, label).save(root / f"{stem}.png")
            ids.append(stem)
    return ids


def write_aspects_for(path: Path, ids: list[str], num_aspects: int, seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    rows = {i: rng.uniform(0.05, 0.95, num_aspects).round(4).tolist() for i in ids}
    write_aspect_file(path, rows)
    return rows


@pytest.fixture
def release_dataset(tmp_path: Path) -> dict:
    """A tiny official-release-layout dataset (3 classes, names with underscores) plus aspect file and config."""
    classes = ["Abyssinian", "american_bulldog", "Bengal"]
    train_ids = write_release_split(tmp_path / "train", classes, per_class=8, seed=0)
    test_ids = write_release_split(tmp_path / "test", classes, per_class=4, seed=1)
    aspects = tmp_path / "aspects.json"
    write_aspects_for(aspects, train_ids, num_aspects=5, seed=2)
    # Train and test folders reuse names such as Bengal_2_0, so test rows live in their own file.
    test_aspects = tmp_path / "test_aspects.json"
    write_aspects_for(test_aspects, test_ids, num_aspects=5, seed=3)
    config = tmp_path / "official.yaml"
    config.write_text(
        f"""EXPERIMENT:
  PROJECT: "tiny"
  NAME: "release"
  TAG: "makd,res18"
DATASET:
  NUM_CLASS: 3
  ASPECT_JSON: "{aspects}"
  TRAIN_IMAGE_PATH: "{tmp_path / "train"}"
  TEST_IMAGE_PATH: "{tmp_path / "test"}"
  NUM_WORKERS: 0
  TEST:
    BATCH_SIZE: 5
DISTILLER:
  TYPE: "MaKD"
  TEACHER: "InternVL2-8B"
  STUDENT: "resnet8x4"
SOLVER:
  BATCH_SIZE: 8
  EPOCHS: 3
  LR: 0.05
  LR_DECAY_STAGES: [2]
  LR_DECAY_RATE: 0.1
  WEIGHT_DECAY: 0.0001
  MOMENTUM: 0.9
  TYPE: "SGD"
  TRAINER: "base"
MaKD:
  ASPECT_NUM: 5
  TEMPERATURE: 1.0
  ALPHA: 4.0
  CE_WEIGHT: 1.0
LOG:
  TENSORBOARD_FREQ: 2
  SAVE_CHECKPOINT_FREQ: 2
  PREFIX: "{tmp_path / "output"}"
  WANDB: False
"""
    )
    return {"root": tmp_path, "config": config, "classes": classes, "train_ids": train_ids, "aspects": aspects,
            "test_aspects": test_aspects}
