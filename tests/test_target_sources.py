"""Target sources (makd.data.target_sources): each kind recognised from its keys and shape, each file read once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_data_helpers import make_cfg, write_class_folders

from makd.artifacts import ArtifactError, sha256_file, write_aspect_file, write_questions
from makd.data.build import build_data
from makd.data.image_index import ImageIndex
from makd.data.target_sources import ANY_KIND, CLASS_KINDS, open_source

CLASSES = ["ant", "bee", "cat"]


def index_of(ids: list[str], labels: list[int]) -> ImageIndex:
    return ImageIndex(ids, labels, CLASSES, "test", paths=[f"/x/{i}.png" for i in ids])


def _write(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_kinds_are_recognised_from_keys_and_shape(tmp_path):
    per_image = tmp_path / "images.json"
    write_aspect_file(per_image, {"ant/1": [0.1, 0.2], "bee/1": [0.3, 0.4]})
    per_class = _write(tmp_path / "classes.json", {"Ant": [0.1, 0.2], "BEE": [0.3, 0.4], "cats": [0.5, 0.6]})
    choice = _write(tmp_path / "choice.json", {c: [[0.5, 0.5], [0.2, 0.3, 0.5]] for c in CLASSES})
    kinds = {
        p.name: open_source(p, key="K", class_names=CLASSES, kinds=ANY_KIND).kind
        for p in (per_image, per_class, choice)
    }
    assert kinds == {"images.json": "per_image", "classes.json": "per_class", "choice.json": "multiple_choice"}
    source = open_source(choice, key="K", class_names=CLASSES, kinds=CLASS_KINDS)
    assert (source.num_aspects, source.num_questions) == (5, 2)
    kept, rows = source.join(index_of(["a", "b", "c"], [2, 0, 2]))
    assert kept.ids == ["a", "b", "c"] and rows.dtype == np.float32 and rows.shape == (3, 5)
    assert rows[1].tolist() == pytest.approx([0.5, 0.5, 0.2, 0.3, 0.5])
    # A per-class file's class without a row is named, whatever the missing-rows policy.
    partial = _write(tmp_path / "partial.json", {"ant": [0.1], "bee": [0.2]})
    with pytest.raises(ArtifactError, match=r"K .*partial.json: class 'cat' of the dataset has no row"):
        open_source(partial, key="K", class_names=CLASSES, kinds=ANY_KIND).join(index_of(["a"], [0]), "drop")


def test_build_data_reads_the_aspect_file_once(tmp_path, monkeypatch):
    train_ids = write_class_folders(tmp_path / "train", {c: 2 for c in CLASSES})
    write_class_folders(tmp_path / "test", {c: 1 for c in CLASSES}, seed=1)
    questions = ["Is it red?", "Does it fly?"]
    write_questions(tmp_path / "q.txt", questions)
    aspects = tmp_path / "aspects.json"
    write_aspect_file(aspects, {i: [0.25, 0.75] for i in train_ids}, meta={"questions": questions})
    reads: list[str] = []
    original = Path.read_bytes

    def counting(self):
        reads.append(self.name)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    cfg = make_cfg(
        {
            "DATASET.TYPE": "image_folder",
            "DATASET.TRAIN_IMAGE_PATH": str(tmp_path / "train"),
            "DATASET.TEST_IMAGE_PATH": str(tmp_path / "test"),
            "DATASET.ASPECT_JSON": str(aspects),
            "DATASET.QUESTIONS": str(tmp_path / "q.txt"),
            "DATASET.VAL_FRACTION": 0.34,
            "DATASET.IMAGE_SIZE": 8,
            "DATASET.CHECK_IMAGES": False,
        }
    )
    data = build_data(cfg)
    assert data.aspect_sha256 == sha256_file(aspects) and data.num_aspects == 2
    assert reads.count("aspects.json") == 1 and reads.count("q.txt") == 1
