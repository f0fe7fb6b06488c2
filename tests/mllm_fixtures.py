"""Fixtures of the stage-2 tests: tiny random InternVL checkpoints, a questions file and image folders.

Test modules import the fixtures they use from here (pytest registers imported fixtures).
The checkpoints are built once per session and loaded back through the command's loading path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from makd.demo.tiny_internvl import SAMPLE_QUESTIONS, TinySpec, build_tiny_checkpoint
from makd.llm.questions_check import screen_questions_file, write_screening_record

QUESTIONS = SAMPLE_QUESTIONS
# (width, height) -> tiles with max_tiles 12: 13 (4x3 + thumbnail), 1, 4 (1x3 + thumbnail), 3 (2x1 + thumbnail)
IMAGE_SIZES = [(500, 375), (448, 448), (300, 900), (896, 448)]


def random_image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def write_image_folder(root: Path, count: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> list[str]:
    """`count` small PNGs in two sub-folders; returns their ids (relative paths without extension), sorted."""
    ids = []
    for i in range(count):
        rel = f"{'cat' if i % 2 else 'dog'}/img_{i:03d}"
        path = root / f"{rel}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        random_image(size[0] + 7 * i, size[1], seed + i).save(path)
        ids.append(rel)
    return sorted(ids)


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory) -> Path:
    """A tiny native InternVL (16 image tokens per tile) saved with save_pretrained."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_hf"), "hf", TinySpec())


@pytest.fixture(scope="session")
def tiny_remote_model(tmp_path_factory) -> Path:
    """A tiny remote-code stand-in checkpoint (modeling file + auto_map), loaded with trust_remote_code."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_remote"), "remote", TinySpec(seed=1))


@pytest.fixture(scope="session")
def tiny_remote_legacy_model(tmp_path_factory) -> Path:
    """The remote-code stand-in with InternLM2's decoder interface (legacy tuple caches, 2D-mask hook)."""
    spec = TinySpec(seed=3, legacy_cache=True)
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_remote_legacy"), "remote", spec)


def screened(path: Path, classes: tuple[str, ...] = ("cat", "dog")) -> Path:
    """Record a passing screening of the questions file at `path` (as make_questions.py --check does), so stage 2
    has no warning to give about it."""
    check = screen_questions_file(path, classes)
    assert check.passed, check.problems
    write_screening_record(path, check, classes="cat, dog", num_classes=len(classes), class_name_rule="names_object")
    return path


@pytest.fixture
def questions_file(tmp_path: Path) -> Path:
    path = tmp_path / "questions.txt"
    path.write_text("".join(q + "\n" for q in QUESTIONS[:4]), encoding="utf-8")
    return screened(path)


@pytest.fixture
def image_folder(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "images"
    return root, write_image_folder(root, 6)
