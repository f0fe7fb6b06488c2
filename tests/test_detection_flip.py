"""DETECTION.HFLIP_PROB: mirrored training items carry mirrored boxes and view-policy rows; draws follow
(SEED, epoch, index), so resume stays exact; evaluation items are never flipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_detection_train import CONFIG, _args, _summary, our_train

from makd.config import load_cfg
from makd.data.views import ViewPolicy
from makd.demo.detection import generate_detection_demo
from makd.detection.data import DetectionDataset, join_rows
from makd.errors import MakdError
from makd.formats.aspect_files import read_aspect_file
from makd.formats.coco import read_coco


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("detection_flip") / "data"
    generate_detection_demo(root, num_train=16, num_test=6, seed=3)
    return root


def _dataset(demo: Path, **kwargs) -> DetectionDataset:
    coco = read_coco(demo / "instances_train.json", demo / "train")
    table = read_aspect_file(demo / "box_aspects_train.json")
    return DetectionDataset(coco, join_rows(coco, table, "box", table.num_aspects, "training"), **kwargs)


def test_a_mirrored_item_has_mirrored_pixels_boxes_and_masked_rows(demo):
    policy = ViewPolicy(16, flip_sensitive=[0, 5], flip_mirror=[(2, 3)], flip_policy="mirror")
    plain = _dataset(demo)
    flipping = _dataset(demo, hflip_prob=1.0, seed=0, policy=policy)
    for i in range(len(plain)):
        before, after = plain[(0, i)], flipping[(0, i)]
        width = before["image"].shape[-1]
        assert torch.equal(after["image"], before["image"].flip(-1))
        b, a = before["target"]["boxes"], after["target"]["boxes"]
        assert torch.allclose(a[:, 0], width - b[:, 2]) and torch.allclose(a[:, 2], width - b[:, 0])
        assert torch.equal(a[:, [1, 3]], b[:, [1, 3]]) and (a[:, 2] > a[:, 0]).all()
        for box_before, box_after in zip(b.round().long(), a.round().long()):  # the object moved with its box
            x1, y1, x2, y2 = box_before.tolist()
            u1, _, u2, _ = box_after.tolist()
            assert torch.equal(after["image"][:, y1:y2, u1:u2], before["image"][:, y1:y2, x1:x2].flip(-1))
        rows_b, rows_a = before["target"]["aspects"], after["target"]["aspects"]
        assert torch.isnan(rows_a[:, [0, 5]]).all()  # flip-sensitive without a pair: unsupervised
        assert torch.equal(rows_a[:, [2, 3]], rows_b[:, [3, 2]])  # the declared pair swaps
        keep = [q for q in range(16) if q not in (0, 2, 3, 5)]
        assert torch.equal(rows_a[:, keep], rows_b[:, keep])
        assert torch.equal(after["target"]["labels"], before["target"]["labels"])
        assert torch.equal(flipping[i]["image"], before["image"])  # evaluation keys: never flipped


def test_flips_follow_seed_epoch_and_index(demo):
    policy = ViewPolicy(16)
    a = _dataset(demo, hflip_prob=0.5, seed=7, policy=policy)
    b = _dataset(demo, hflip_prob=0.5, seed=7, policy=policy)
    other = _dataset(demo, hflip_prob=0.5, seed=8, policy=policy)
    draws = np.array([[a.flips(e, i) for i in range(len(a))] for e in range(6)])
    assert draws.tolist() == [[b.flips(e, i) for i in range(len(b))] for e in range(6)]
    assert draws.tolist() != [[other.flips(e, i) for i in range(len(b))] for e in range(6)]
    assert 0.3 < draws.mean() < 0.7 and len({tuple(row) for row in draws}) > 1  # per epoch, about half
    assert not any(_dataset(demo).flips(e, i) for e in range(3) for i in range(16))


def test_flipping_training_resumes_exactly_and_records_its_policy(demo, tmp_path):
    flip = ["DETECTION.HFLIP_PROB", "0.5", "MaKD.FLIP_SENSITIVE", "[q1, q6]"]
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    assert our_train.main(_args(demo, unbroken, *flip)) == 0
    assert our_train.main([*_args(demo, broken, *flip), "--stop-after-epoch", "1"]) == 0
    assert our_train.main([*_args(demo, broken, *flip), "--resume"]) == 0
    rows = [
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (broken, unbroken)
    ]
    drop = ("epoch_seconds", "train_images_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows[0]] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows[1]
    ]
    summary = _summary(unbroken)
    assert summary["hflip_prob"] == 0.5 and summary["view_policy"]["flip_sensitive"] == ["q1", "q6"]
    plain = tmp_path / "plain"
    assert our_train.main(_args(demo, plain)) == 0
    assert _summary(plain)["view_policy"] is None
    assert rows[1][0]["train_loss"] != json.loads((plain / "metrics.jsonl").read_text().splitlines()[0])["train_loss"]


def test_flip_settings_errors_are_one_line(demo, tmp_path):
    with pytest.raises(MakdError, match=r"DETECTION.HFLIP_PROB must be in \[0, 1\], got 1.5"):
        load_cfg(str(CONFIG), _args(demo, tmp_path)[1:] + ["DETECTION.HFLIP_PROB", "1.5"])
    with pytest.raises(MakdError, match="DATASET.ASPECT_JSON_FLIP is not supported for TASK detection"):
        load_cfg(str(CONFIG), _args(demo, tmp_path)[1:] + ["DATASET.ASPECT_JSON_FLIP", "x.json"])
