"""TASK detection through tools/our_train.py (issue 13, items 1, 3 and 4): the demo set, exact resume, saved
detections scored again by pycocotools, the controls, the image-level variant, DDP, and the data errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tool_modules import load_tool, run_on_two_processes

from makd.config import load_cfg
from makd.demo.detection import generate_detection_demo
from makd.detection.data import apply_control, join_rows
from makd.errors import MakdError
from makd.formats.aspect_files import read_aspect_file, write_aspect_file
from makd.formats.coco import read_coco

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo_detection" / "makd.yaml"
our_train = load_tool("our_train")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A tiny detection demo: 16 train / 6 test images of 64 px."""
    root = tmp_path_factory.mktemp("detection_demo") / "data"
    generate_detection_demo(root, num_train=16, num_test=6, seed=3)
    return root


def _args(demo: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(CONFIG),
        "OUTPUT_DIR",
        str(out),
        "DATASET.TRAIN_IMAGE_PATH",
        str(demo / "train"),
        "DATASET.TEST_IMAGE_PATH",
        str(demo / "test"),
        "DATASET.ASPECT_JSON",
        str(demo / "box_aspects_train.json"),
        "DATASET.TEST_ASPECT_JSON",
        str(demo / "box_aspects_test.json"),
        "DATASET.QUESTIONS",
        str(demo / "questions.txt"),
        "DETECTION.TRAIN_JSON",
        str(demo / "instances_train.json"),
        "DETECTION.TEST_JSON",
        str(demo / "instances_test.json"),
        "SOLVER.EPOCHS",
        "2",
        "SOLVER.BATCH_SIZE",
        "4",
        "SOLVER.WARMUP_EPOCHS",
        "0",
        "DATASET.TEST.BATCH_SIZE",
        "4",
        *extra,
    ]


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_resume_of_a_detection_run_equals_the_unbroken_run(demo, tmp_path):
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    assert our_train.main(_args(demo, unbroken)) == 0
    assert our_train.main([*_args(demo, broken), "--stop-after-epoch", "1"]) == 0
    assert not (broken / "summary.json").exists()
    assert torch.load(broken / "latest.pth", weights_only=False)["epoch"] == 1
    assert our_train.main([*_args(demo, broken), "--resume"]) == 0
    a, b = _summary(broken), _summary(unbroken)
    keys = (
        "test_map_last",
        "test_map50_last",
        "test_map75_last",
        "test_map_best",
        "best_epoch",
        "test_aspect_mae_last",
    )
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    rows = [
        [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] for out in (broken, unbroken)
    ]
    drop = ("epoch_seconds", "train_images_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows[0]] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows[1]
    ]
    wa = torch.load(broken / "student.pth", weights_only=False)["model"]
    wb = torch.load(unbroken / "student.pth", weights_only=False)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # the run's summary and files: the figures the demo reports
    assert b["task"] == "detection" and b["num_aspects"] == 16 and b["aspect_level"] == "box"
    assert b["num_train_images"] == 16 and b["supervised_train_rows"] == b["num_train_boxes"]
    assert set(json.loads((unbroken / "category_ap.json").read_text())["test"]) == set(
        c.name for c in read_coco(demo / "instances_test.json", demo / "test").categories
    )


def test_resuming_a_finished_run_writes_the_same_detections_again(demo, tmp_path):
    out = tmp_path / "done"
    assert our_train.main(_args(demo, out, "SOLVER.EPOCHS", "1")) == 0
    first = (out / "detections_test.json").read_text()
    (out / "detections_test.json").unlink()
    assert our_train.main([*_args(demo, out, "SOLVER.EPOCHS", "1"), "--resume"]) == 0
    assert (out / "detections_test.json").read_text() == first  # evaluated again, on the main process alone


def test_saved_detections_score_the_same_under_pycocotools(demo, tmp_path):
    out = tmp_path / "run"
    assert our_train.main(_args(demo, out, "SOLVER.EPOCHS", "3")) == 0
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(demo / "instances_test.json"))
        evaluation = COCOeval(truth, truth.loadRes(str(out / "detections_test.json")), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    summary = _summary(out)
    assert summary["test_map_last"] == pytest.approx(100 * evaluation.stats[0], abs=1e-9)
    assert summary["test_map50_last"] == pytest.approx(100 * evaluation.stats[1], abs=1e-9)
    assert summary["test_map75_last"] == pytest.approx(100 * evaluation.stats[2], abs=1e-9)
    assert summary["test_map50_last"] > 0  # the detector found some shapes: the comparison is not 0 == 0


def test_baseline_image_level_and_controls_train(demo, tmp_path):
    base = tmp_path / "baseline"
    assert our_train.main(_args(demo, base, "DISTILLER.TYPE", "NONE", "SOLVER.EPOCHS", "1")) == 0
    assert _summary(base)["num_aspects"] == 0 and "test_aspect_mae_last" not in _summary(base)
    weights = torch.load(base / "student.pth", weights_only=False)["model"]
    assert not any("aspect" in k for k in weights)
    image = tmp_path / "image"
    image_rows = ["DATASET.ASPECT_JSON", str(demo / "image_aspects_train.json")]
    image_rows += ["DATASET.TEST_ASPECT_JSON", str(demo / "image_aspects_test.json")]
    assert our_train.main(_args(demo, image, "DETECTION.ASPECT_LEVEL", "image", "SOLVER.EPOCHS", "1", *image_rows)) == 0
    lines = [json.loads(line) for line in (image / "metrics.jsonl").read_text().splitlines()]
    assert "train_loss_image_aspect" in lines[0] and "train_loss_aspect" not in lines[0]
    assert 0 <= _summary(image)["test_aspect_mae_last"] <= 1
    shuffled = tmp_path / "shuffled"
    assert our_train.main(_args(demo, shuffled, "MaKD.TARGETS", "shuffled", "SOLVER.EPOCHS", "1")) == 0
    assert _summary(shuffled)["targets"] == "shuffled"


def test_controls_act_per_category_on_supervised_rows(demo):
    coco = read_coco(demo / "instances_train.json", demo / "train")
    table = read_aspect_file(demo / "box_aspects_train.json")
    rows = join_rows(coco, table, "box", table.num_aspects, "training")
    rows.boxes[0][0] = np.nan  # a box stage 2 skipped
    labels = np.array([b.label for i in coco.images for b in coco.boxes_of(i.id)])
    teacher = np.concatenate(rows.boxes)
    mean = np.concatenate(apply_control(coco, rows, "box", "class_mean", 0).boxes)
    assert np.isnan(mean[0]).all()
    for label in np.unique(labels):
        members = (labels == label) & np.isfinite(teacher).all(axis=1)
        assert np.allclose(mean[members], teacher[members].mean(axis=0), atol=1e-6)
    shuffled = np.concatenate(apply_control(coco, rows, "box", "shuffled", 0).boxes)
    assert np.isnan(shuffled[0]).all()
    assert sorted(map(tuple, shuffled[1:])) == sorted(map(tuple, teacher[1:]))
    assert not np.array_equal(shuffled[1:], teacher[1:])
    random = np.concatenate(apply_control(coco, rows, "box", "random", 0).boxes)
    assert np.isnan(random[0]).all() and np.isfinite(random[1:]).all()


def test_missing_box_rows_are_unsupervised_and_a_file_of_another_set_is_refused(demo, tmp_path, capsys):
    table = read_aspect_file(demo / "box_aspects_train.json")
    partial = tmp_path / "partial.json"
    write_aspect_file(partial, {k: v.tolist() for k, v in list(zip(table.ids, table.values))[5:]})
    coco = read_coco(demo / "instances_train.json", demo / "train")
    rows = join_rows(coco, read_aspect_file(partial), "box", 16, "training")
    assert rows.num_missing == 5 and rows.num_supervised == len(table.ids) - 5
    assert np.isnan(np.concatenate(rows.boxes)).all(axis=1).sum() == 5
    assert rows.missing_examples == table.ids[:3]
    assert (
        our_train.main(_args(demo, tmp_path / "partial", "DATASET.ASPECT_JSON", str(partial), "SOLVER.EPOCHS", "1"))
        == 0
    )
    assert "warning: 5 training boxes have no row" in capsys.readouterr().err
    assert _summary(tmp_path / "partial")["unsupervised_train_rows"] == 5
    # an image-level file given for box-level training
    code = our_train.main(_args(demo, tmp_path / "x", "DATASET.ASPECT_JSON", str(demo / "image_aspects_train.json")))
    assert code == 2 and "is not '<image id>#<annotation id>'" in capsys.readouterr().err
    other = tmp_path / "other.json"
    write_aspect_file(other, {f"9{k}": v.tolist() for k, v in zip(table.ids, table.values)})
    assert our_train.main(_args(demo, tmp_path / "y", "DATASET.ASPECT_JSON", str(other))) == 2
    assert "none of the" in capsys.readouterr().err


def test_detection_config_errors_are_one_line(demo, tmp_path):
    with pytest.raises(MakdError, match="DISTILLER.TYPE 'KD' is not available for TASK detection"):
        load_cfg(str(CONFIG), _args(demo, tmp_path)[1:] + ["DISTILLER.TYPE", "KD"])
    with pytest.raises(MakdError, match="DETECTION.ASPECT_LEVEL 'crop' is unknown"):
        load_cfg(str(CONFIG), ["DETECTION.ASPECT_LEVEL", "crop"])
    with pytest.raises(MakdError, match="TASK 'segmentation' is unknown"):
        load_cfg(str(CONFIG), ["TASK", "segmentation"])
    with pytest.raises(MakdError, match="DETECTION.TRAIN_JSON is empty"):
        load_cfg(str(CONFIG), ["DETECTION.TRAIN_JSON", ""])
    with pytest.raises(MakdError, match=r"DATASET.VAL_FRACTION must be in \[0, 1\), got 1.0"):
        load_cfg(str(CONFIG), ["DATASET.VAL_FRACTION", "1.0"])


def test_eval_tool_refuses_a_detection_config_in_one_line(capsys):
    assert load_tool("eval").main([str(CONFIG), "student.pth"]) == 2
    assert "tools/eval.py scores classification students" in capsys.readouterr().err


def test_test_file_with_other_categories_is_refused(demo, tmp_path, capsys):
    data = json.loads((demo / "instances_test.json").read_text())
    data["categories"].append({"id": 99, "name": "purple_plain"})
    other = tmp_path / "instances_test.json"
    other.write_text(json.dumps(data))
    assert our_train.main(_args(demo, tmp_path / "run", "DETECTION.TEST_JSON", str(other))) == 2
    assert "list different category ids" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written: no folder left behind


@pytest.mark.skipif(os.environ.get("MAKD_SKIP_DDP") == "1", reason="MAKD_SKIP_DDP=1")
def test_two_process_distributed_detection_run_on_cpu(demo, tmp_path):
    out = tmp_path / "ddp"
    proc = run_on_two_processes("our_train", _args(demo, out, "SOLVER.EPOCHS", "1"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = _summary(out)
    assert summary["world_size"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["test_num_samples"] == 6  # every test image scored exactly once over the two ranks
    detections = json.loads((out / "detections_test.json").read_text())
    assert {d["image_id"] for d in detections} <= set(range(1, 7))


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "detection").glob("[!_]*.yaml")))
def test_coco_configs_load_and_their_detector_builds(name):
    from makd.detection.model import build_backbone
    from makd.tasks.detection import settings_from_config

    cfg = load_cfg(str(REPO / "configs" / "detection" / name))
    assert cfg.TASK == "detection" and cfg.DISTILLER.TYPE in ("NONE", "MaKD")
    backbone = build_backbone(cfg.DISTILLER.STUDENT, settings_from_config(cfg))
    assert len(backbone.body.return_layers) + 1 == len(cfg.DETECTION.ANCHOR_SIZES)
