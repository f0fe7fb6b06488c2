"""The detection demo (issue 13, item 5): the synthetic COCO set and its simulated per-box teacher, and
`tools/demo.py --task detection` end to end (stage 2 per box on a tiny random InternVL, then training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tool_modules import load_tool

from makd.demo.classification import demo_questions
from makd.demo.detection import generate_detection_demo, read_detection_demo_summary
from makd.errors import MakdError
from makd.formats.aspect_files import read_aspect_file
from makd.formats.coco import read_coco

demo_tool = load_tool("demo")


def test_the_set_is_a_valid_coco_set_with_one_teacher_row_per_box(tmp_path: Path):
    root = tmp_path / "demo"
    summary = generate_detection_demo(root, num_train=40, num_test=10, seed=2)
    coco = read_coco(root / "instances_train.json", root / "train")
    assert len(coco.images) == 40 and coco.num_classes == 8
    boxes = [b for i in coco.images for b in coco.boxes_of(i.id)]
    assert summary["counts"]["train"]["boxes"] == len(boxes)
    per_image = [len(coco.boxes_of(i.id)) for i in coco.images]
    assert max(per_image) <= 3 and min(per_image) >= 1 and np.mean(per_image) > 2.0  # 2-3 drawn, rarely one skipped
    assert all(0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64 for x1, y1, x2, y2 in (b.box for b in boxes))
    table = read_aspect_file(root / "box_aspects_train.json")
    assert sorted(table.ids) == sorted(coco.box_ids()) and table.num_aspects == len(demo_questions())
    assert ((table.values > 0) & (table.values < 1)).all()
    images = read_aspect_file(root / "image_aspects_train.json")
    assert sorted(images.ids) == sorted(Path(i.file_name).stem for i in coco.images)
    # the simulated teacher knows each box's colour: "mostly <colour>?" is on the right side of 0.5 for most boxes
    names = {c.label: c.name for c in coco.categories}
    row = table.index()
    colours = ("red", "yellow", "green", "blue")
    right = [
        (table.values[row[f"{i.id}#{b.annotation_id}"]][:4] > 0.5) == [names[b.label].startswith(c) for c in colours]
        for i in coco.images
        for b in coco.boxes_of(i.id)
    ]
    assert np.mean(right) > 0.85
    assert read_detection_demo_summary(root)["num_train"] == 40


def test_the_same_seed_gives_the_same_bytes(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_detection_demo(a, num_train=6, num_test=3, seed=5)
    generate_detection_demo(b, num_train=6, num_test=3, seed=5)
    for name in ("instances_train.json", "box_aspects_train.json", "train/train_00003.png", "test/test_00002.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    with pytest.raises(MakdError, match="already exists"):
        generate_detection_demo(a, num_train=6, num_test=3)
    with pytest.raises(MakdError, match="not a demo class"):
        generate_detection_demo(tmp_path / "c", classes=("purple_plain",))


def test_demo_command_runs_stage_2_per_box_then_trains_and_prints_the_table(tmp_path: Path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    argv = ["--task", "detection", "--data", str(data), "--out", str(out), "--num-train", "8", "--num-test", "4"]
    argv += ["--runs", "baseline,internvl", "--epochs", "1", "SOLVER.BATCH_SIZE", "4"]
    assert demo_tool.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| baseline | - | - | 0 |" in printed and "| internvl | box | teacher | 0 |" in printed
    result = json.loads((out / "results.json").read_text())
    assert [row["run"] for row in result["rows"]] == ["baseline", "internvl"]
    assert result["stage2_seconds"] > 0
    stage2 = read_aspect_file(out / "stage2_internvl" / "box_aspects_train.json")
    assert sorted(stage2.ids) == sorted(read_coco(data / "instances_train.json", data / "train").box_ids())
    assert result["rows"][1]["aspect_file"] == str(out / "stage2_internvl" / "box_aspects_train.json")
    # an unknown run is one line, exit code 2
    assert demo_tool.main([*argv[:8], "--runs", "makd,crop"]) == 2
    assert "unknown detection demo run 'crop'" in capsys.readouterr().err
