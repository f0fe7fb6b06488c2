"""DATASET.VAL_FRACTION for detection: a fixed carve of the training images, evaluated each epoch, selecting the
reported best epoch; the held-out images do not train."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_detection_train import _args, _summary, our_train
from tool_modules import load_tool

from makd.detection.data import _largest_box_label, validation_carve
from makd.formats.coco import read_coco


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from makd.demo.detection import generate_detection_demo

    root = tmp_path_factory.mktemp("detection_val") / "data"
    generate_detection_demo(root, num_train=24, num_test=6, seed=4)
    return root


def test_carve_is_disjoint_stratified_and_fixed_by_its_seed(demo):
    coco = read_coco(demo / "instances_train.json", demo / "train")
    kept, held = validation_carve(coco, 0.25, seed=0)
    kept_ids, held_ids = [i.id for i in kept.images], [i.id for i in held.images]
    assert sorted(kept_ids + held_ids) == [i.id for i in coco.images] and not set(kept_ids) & set(held_ids)
    groups = Counter(_largest_box_label(coco, i.id) for i in coco.images)
    held_groups = Counter(_largest_box_label(coco, i) for i in held_ids)
    assert held_groups == {g: min(round(0.25 * n), n - 1) for g, n in groups.items() if min(round(0.25 * n), n - 1)}
    for image_id in held_ids:  # the boxes travel with their image
        assert held.boxes_of(image_id) == coco.boxes_of(image_id)
    assert [i.id for i in validation_carve(coco, 0.25, seed=0)[1].images] == held_ids
    assert [i.id for i in validation_carve(coco, 0.25, seed=1)[1].images] != held_ids
    assert kept.categories == coco.categories and kept.num_classes == coco.num_classes


def test_a_detection_run_with_a_validation_split_selects_on_it(demo, tmp_path, capsys):
    out = tmp_path / "run"
    assert our_train.main(_args(demo, out, "DATASET.VAL_FRACTION", "0.25", "SOLVER.EPOCHS", "2")) == 0
    summary = _summary(out)
    coco = read_coco(demo / "instances_train.json", demo / "train")
    held = validation_carve(coco, 0.25, seed=0)[1]
    assert summary["num_val_images"] == len(held.images) > 0
    assert summary["num_train_images"] == len(coco.images) - len(held.images)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(row["val_num_samples"] == len(held.images) and 0 <= row["val_map"] <= 100 for row in rows)
    chosen = max(rows, key=lambda row: (row["val_map"], -row["epoch"]))
    assert summary["best_selected_on"] == "val" and summary["best_epoch"] == chosen["epoch"]
    assert summary["test_map_at_best_val"] == chosen["test_map"]
    assert "val_aspect_mae" in rows[0]  # the teacher's rows of the held-out boxes, for the agreement
    capsys.readouterr()
    assert load_tool("report").main([str(out)]) == 0
    assert "test COCO mAP at best val epoch" in capsys.readouterr().out


def test_the_validation_ground_truth_scores_as_the_whole_training_file(demo):
    """Restricting the instances to the held-out images changes no number COCOeval gives for those images."""
    from makd.detection.coco_eval import coco_map
    from makd.tasks.detection import _restricted_instances

    path = demo / "instances_train.json"
    held = validation_carve(read_coco(path, demo / "train"), 0.25, seed=0)[1]
    full = json.loads(path.read_text())
    restricted = _restricted_instances(str(path), held)
    ids = {i.id for i in held.images}
    assert {i["id"] for i in restricted["images"]} == ids
    assert len(restricted["annotations"]) == sum(a["image_id"] in ids for a in full["annotations"]) > 0
    # detections: every training box shifted by 0-3 px with a random score (those outside the carve must not count)
    rng = np.random.default_rng(0)
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.uniform(0.3, 1.0)),
         "bbox": [a["bbox"][0] + float(rng.uniform(0, 3)), a["bbox"][1], a["bbox"][2], a["bbox"][3]]}
        for a in full["annotations"]
    ]  # fmt: skip
    whole, part = coco_map(full, detections, image_ids=sorted(ids)), coco_map(restricted, detections, sorted(ids))
    assert 0 < whole["map"] < 100 and whole == part
