"""COCO mAP of saved detections (issue 13, item 4): the project's numbers are pycocotools' own COCOeval numbers."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from makd.detection.coco_eval import coco_map, complete_ground_truth, detections_to_coco


def _ground_truth(seed: int = 0) -> dict:
    """8 images of 100x80 with 1-4 boxes of 3 categories (ids 4, 9, 17), "area" given, plus one crowd box."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, 9):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 100, "height": 80})
        for _ in range(rng.integers(1, 5)):
            w, h = rng.uniform(8, 40, size=2)
            x, y = rng.uniform(0, 100 - w), rng.uniform(0, 80 - h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice([4, 9, 17])),
                    "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                    "area": round(w * h, 4),
                    "iscrowd": 0,
                }
            )
    annotations.append(
        {"id": 999, "image_id": 3, "category_id": 9, "bbox": [0, 0, 50, 40], "area": 2000.0, "iscrowd": 1}
    )
    categories = [{"id": 4, "name": "circle"}, {"id": 9, "name": "square"}, {"id": 17, "name": "star"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _noisy_detections(truth: dict, seed: int = 1) -> list[dict]:
    """Jittered copies of most true boxes (some with the wrong category) plus false positives, random scores."""
    rng = np.random.default_rng(seed)
    out = []
    for a in truth["annotations"]:
        if a["iscrowd"] or rng.random() < 0.15:
            continue
        x, y, w, h = a["bbox"]
        jitter = rng.normal(0, 0.12, size=4) * [w, h, w, h]
        category = a["category_id"] if rng.random() > 0.2 else 9
        out.append(
            {
                "image_id": a["image_id"],
                "category_id": category,
                "bbox": [round(float(v), 2) for v in (x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3])],
                "score": round(float(rng.uniform(0.05, 1)), 5),
            }
        )
    for _ in range(10):
        out.append(
            {
                "image_id": int(rng.integers(1, 9)),
                "category_id": int(rng.choice([4, 9, 17])),
                "bbox": [round(float(v), 2) for v in rng.uniform([0, 0, 5, 5], [60, 40, 30, 30])],
                "score": round(float(rng.uniform(0.05, 1)), 5),
            }
        )
    return out


def _pycocotools_stats(gt_path: Path, det_path: Path) -> np.ndarray:
    """pycocotools used as its own README says, on the files: COCO(gt) / loadRes(dets) / COCOeval."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(gt_path))
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(str(det_path)), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_pycocotools_own_evaluation_of_the_saved_detections(tmp_path: Path, seed: int):
    truth = _ground_truth(seed)
    detections = _noisy_detections(truth, seed + 10)
    gt_path, det_path = tmp_path / "instances.json", tmp_path / "detections.json"
    gt_path.write_text(json.dumps(truth))
    det_path.write_text(json.dumps(detections))
    ours = coco_map(json.loads(gt_path.read_text()), json.loads(det_path.read_text()))
    stats = _pycocotools_stats(gt_path, det_path)
    assert 5.0 < ours["map"] < 95.0  # neither trivial end: the comparison means something
    assert ours["map"] == pytest.approx(100 * stats[0], abs=1e-9)
    assert ours["map50"] == pytest.approx(100 * stats[1], abs=1e-9)
    assert ours["map75"] == pytest.approx(100 * stats[2], abs=1e-9)
    # mAP is the mean of the per-category APs (every category has boxes here)
    assert np.mean(list(ours["category_ap"].values())) == pytest.approx(ours["map"], abs=1e-9)


def test_perfect_detections_score_100_and_a_category_without_truth_has_no_ap():
    truth = _ground_truth(0)
    truth["categories"].append({"id": 30, "name": "unused"})
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in truth["annotations"]
        if not a["iscrowd"]
    ]
    result = coco_map(truth, perfect)
    assert result["map"] == pytest.approx(100.0) and result["map50"] == pytest.approx(100.0)
    assert result["category_ap"]["unused"] is None
    assert result["category_ap"]["circle"] == pytest.approx(100.0)


def test_no_detections_scores_zero_and_images_can_be_restricted():
    truth = _ground_truth(0)
    empty = coco_map(truth, [])
    assert (empty["map"], empty["map50"], empty["map75"]) == (0.0, 0.0, 0.0)
    assert set(empty["category_ap"].values()) == {0.0}
    perfect_on_1 = [
        {"image_id": 1, "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in truth["annotations"]
        if a["image_id"] == 1
    ]
    assert coco_map(truth, perfect_on_1, image_ids=[1])["map"] == pytest.approx(100.0)
    assert coco_map(truth, perfect_on_1)["map"] < 60.0  # the other images' boxes are all missed


def test_area_and_iscrowd_are_filled_when_a_file_lacks_them():
    truth = _ground_truth(0)
    bare = json.loads(json.dumps(truth))
    for a in bare["annotations"]:
        del a["area"]
        a.pop("iscrowd") if a["id"] != 999 else None
    filled = complete_ground_truth(bare)
    first = filled["annotations"][0]
    assert first["area"] == pytest.approx(first["bbox"][2] * first["bbox"][3]) and first["iscrowd"] == 0
    assert "area" not in bare["annotations"][0]  # the caller's dict is left alone
    detections = _noisy_detections(truth, 5)
    assert coco_map(bare, detections)["map"] == pytest.approx(coco_map(truth, detections)["map"], abs=0.5)


def test_detections_to_coco_converts_boxes_and_labels():
    rows = detections_to_coco(
        7, np.array([[10.0, 20.0, 30.5, 60.0]]), np.array([0.812345678]), np.array([2]), category_ids=[4, 9, 17]
    )
    assert rows == [{"image_id": 7, "category_id": 9, "bbox": [10.0, 20.0, 20.5, 40.0], "score": 0.81235}]
