"""COCO box mAP of saved detections through pycocotools (class predictions only), and per-category AP.

Detections are COCO results: {"image_id", "category_id", "bbox": [x, y, width, height], "score"} in the
original image's pixels, the format pycocotools' `COCO.loadRes` reads, so a run's saved detections file can be
scored again by anyone with pycocotools. The ground truth is the instances JSON itself; the two fields COCO
evaluation needs but COCO-format files sometimes lack ("area": width x height of the box, "iscrowd": 0) are
filled in before evaluation, as pycocotools would otherwise fail on such a file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_NAMES = ("map", "map50", "map75")  # COCOeval.stats[0:3]: AP at IoU 0.50:0.95, 0.50, 0.75 (all areas, 100 dets)


def complete_ground_truth(instances: dict[str, Any]) -> dict[str, Any]:
    """A copy of an instances dict with "area" and "iscrowd" on every annotation (COCOeval reads both)."""
    data = copy.deepcopy(instances)
    for entry in data["annotations"]:
        entry.setdefault("area", float(entry["bbox"][2]) * float(entry["bbox"][3]))
        entry.setdefault("iscrowd", 0)
    data.setdefault("info", {})  # COCO.loadRes copies it
    return data


def detections_to_coco(
    image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """COCO results of one image: boxes [D, 4] (x1, y1, x2, y2), scores [D], labels [D] in 1..K, category_ids[k - 1]
    the COCO id of label k. Coordinates are rounded to 0.01 px so a saved file reads back to the same numbers."""
    out = []
    for (x1, y1, x2, y2), score, label in zip(np.asarray(boxes, float), np.asarray(scores, float), labels):
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_ids[int(label) - 1]),
                "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
                "score": round(float(score), 5),
            }
        )
    return out


def _quiet(call, *args):
    """pycocotools prints progress and tables on stdout; the run's log has its own lines."""
    with contextlib.redirect_stdout(io.StringIO()):
        return call(*args)


def coco_map(
    instances: dict[str, Any], detections: list[dict[str, Any]], image_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """{"map", "map50", "map75" (in %), "category_ap": {name: AP % or None}} of `detections` against `instances`.

    `image_ids` restricts the evaluation to those images (default: every image of the file). A category with no
    ground-truth box among them has AP None (COCOeval's -1). No detections at all scores 0 on every metric.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ground_truth = COCO()
    ground_truth.dataset = complete_ground_truth(instances)
    _quiet(ground_truth.createIndex)
    ids = sorted(ground_truth.getImgIds()) if image_ids is None else sorted(int(i) for i in image_ids)
    names = {c["id"]: c["name"] for c in ground_truth.dataset["categories"]}
    wanted = set(ids)
    detections = [d for d in detections if d["image_id"] in wanted]
    has_truth = {
        c: any(not a.get("iscrowd", 0) for a in ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=ids, catIds=[c])))
        for c in names
    }
    if not detections:  # loadRes cannot read an empty list; nothing detected is AP 0 wherever there is truth
        category_ap = {names[c]: (0.0 if has_truth[c] else None) for c in sorted(names)}
        return {**dict.fromkeys(METRIC_NAMES, 0.0), "category_ap": category_ap}
    results = _quiet(ground_truth.loadRes, copy.deepcopy(detections))
    evaluation = COCOeval(ground_truth, results, "bbox")
    evaluation.params.imgIds = ids
    _quiet(evaluation.evaluate)
    _quiet(evaluation.accumulate)
    _quiet(evaluation.summarize)
    # precision [T IoUs, R recall points, K categories, A areas, M max-dets]: area "all" (0), 100 detections (-1),
    # averaged over IoUs and recall points where defined, as COCOeval.summarize computes stats[0].
    precision = evaluation.eval["precision"]
    category_ap = {}
    for k, category in enumerate(evaluation.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        category_ap[names[category]] = 100.0 * float(values.mean()) if values.size else None
    stats = {name: _percent(evaluation.stats[i]) for i, name in enumerate(METRIC_NAMES)}
    return {**stats, "category_ap": category_ap}


def _percent(value: float) -> float:
    """COCOeval's -1 (nothing to evaluate) stays -1 rather than becoming -100."""
    return float(value) * 100.0 if value >= 0 and math.isfinite(value) else -1.0
