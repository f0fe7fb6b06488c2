"""COCO-format detection data (issue 13, item 1): the label mapping, the box-id rule and every bad-input error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from coco_fixtures import tiny_coco_dict, write_coco
from PIL import Image

from makd.errors import MakdError
from makd.formats.coco import CocoBox, box_id, parse_box_id, read_coco
from makd.formats.image_decode import ImageLoadError, read_rgb


def test_reads_images_categories_and_boxes_with_contiguous_labels(tmp_path: Path):
    instances, images_dir = write_coco(tmp_path)
    coco = read_coco(instances, images_dir)
    assert [image.id for image in coco.images] == [5, 9, 11]
    assert [(c.id, c.label, c.name) for c in coco.categories] == [
        (3, 1, "square"),
        (7, 2, "circle"),
        (12, 3, "triangle"),
    ]
    assert coco.num_classes == 3
    assert coco.label_names == ["__background__", "square", "circle", "triangle"]
    # Sorted by annotation id; [x, y, w, h] -> xyxy; the 0.4 px overhang is within tolerance and clipped.
    assert coco.boxes_of(5) == [CocoBox(101, (0.0, 0.0, 64.0, 48.0), 3), CocoBox(102, (10.0, 8.0, 30.0, 24.0), 2)]
    assert coco.boxes_of(9) == [CocoBox(200, (30.5, 20.0, 42.5, 26.0), 1)]
    assert coco.crowd_boxes_of(9) == [CocoBox(201, (1.0, 1.0, 31.0, 31.0), 1)]
    assert coco.boxes_of(11) == [] and coco.crowd_boxes_of(11) == []  # a negative image
    assert coco.box_ids() == ["5#101", "5#102", "9#200"]
    with pytest.raises(MakdError, match="no image with id 4"):
        coco.boxes_of(4)


def test_images_are_read_rgb_through_the_one_decoder(tmp_path: Path):
    data = tiny_coco_dict()
    instances, images_dir = write_coco(tmp_path, data)
    grey = np.arange(80 * 60, dtype=np.uint8).reshape(60, 80)
    Image.fromarray(grey, mode="L").save(images_dir / "b.png")  # a greyscale file becomes RGB
    coco = read_coco(instances, images_dir)
    image = coco.read_image(9)
    assert image.mode == "RGB" and image.size == (80, 60)
    assert np.array_equal(np.asarray(image), np.asarray(read_rgb(images_dir / "b.png")))
    assert np.array_equal(np.asarray(image)[..., 1], grey)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(images_dir / "c.png")
    with pytest.raises(ImageLoadError, match=r"c.png is 10x10 but .* says image id 11 is 40x40"):
        coco.read_image(11)


def test_box_id_rule_round_trips_and_refuses_image_level_ids():
    assert box_id(139, 2001) == "139#2001"
    assert parse_box_id("139#2001") == (139, 2001)
    for bad in ("cat/img_001", "139#", "#5", "a#5", "1#2#3"):
        with pytest.raises(MakdError, match=r"is not '<image id>#<annotation id>'"):
            parse_box_id(bad)


def _error(tmp_path: Path, edit) -> str:
    data = tiny_coco_dict()
    edit(data)
    instances, images_dir = write_coco(tmp_path, data)
    with pytest.raises(MakdError) as err:
        read_coco(instances, images_dir)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{instances}: ")
    return message


def _set(key, index, field, value):
    def edit(data):
        data[key][index][field] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set("annotations", 0, "bbox", [50, 8, 20, 16]), r"annotations\[0\] \(id 102\) has bbox .* outside its image"),
        (
            _set("annotations", 0, "bbox", [-1.5, 8, 20, 16]),
            r"outside its image sub/a.png of 64x48 \(by more than 1 px\)",
        ),
        (_set("annotations", 0, "bbox", [10, 8, 5, -2]), r"\(id 102\) has bbox .* negative width or height"),
        (_set("annotations", 0, "bbox", [10, 8, 20]), r"expected \[x, y, width, height\] of 4 finite numbers"),
        (_set("annotations", 0, "bbox", [10, 8, float("nan"), 3]), r"4 finite numbers"),
        (
            _set("annotations", 0, "category_id", 4),
            r"\(id 102\) has category_id 4, not an id in 'categories' \(3, 7, 12\)",
        ),
        (_set("annotations", 0, "image_id", 6), r"has image_id 6, not an id in 'images'"),
        (_set("annotations", 0, "iscrowd", 2), r"has iscrowd 2; expected 0 or 1"),
        (_set("annotations", 1, "id", 102), r"annotations\[0\] and annotations\[1\] share the id 102"),
        (_set("images", 1, "id", 9), r"images\[0\] and images\[1\] share the id 9"),
        (_set("categories", 2, "id", 7), r"categories\[0\] and categories\[2\] share the id 7"),
        (_set("categories", 2, "name", "circle"), r"categories 7 and 12 are both named 'circle'"),
        (_set("images", 0, "id", "9"), r"images\[0\] has id '9'; COCO ids are integers"),
        (_set("images", 0, "width", 0), r"has width 0 and height 60; both must be positive integers"),
        (
            _set("images", 0, "file_name", "sub/a.png"),
            r"images\[1\] \(id 5\) repeats the file_name 'sub/a.png' of image id 9",
        ),
        (_set("images", 0, "file_name", ""), r"has file_name ''"),
        (
            lambda d: d.update(annotations=[]),
            r"holds no annotations at all \(3 images, 0 boxes\); images without boxes",
        ),
        (lambda d: d.update(categories=[]), r"'categories' is empty"),
        (lambda d: d.pop("annotations"), r"no 'annotations' list; is it a COCO instances file"),
        (lambda d: d.update(images={}), r"'images' is an object, expected an array"),
        (lambda d: d["annotations"].append(3), r"annotations\[4\] is a number, expected an object"),
    ],
)
def test_bad_sets_fail_in_one_line_naming_the_entry(tmp_path: Path, edit, expected: str):
    message = _error(tmp_path, edit)
    assert re.search(expected, message), message


def test_zero_width_or_height_boxes_are_left_out_with_one_warning(tmp_path: Path, caplog):
    data = tiny_coco_dict()
    data["annotations"][0]["bbox"] = [10, 8, 0, 16]  # id 102 on image 5: zero width
    data["annotations"].append({**data["annotations"][0], "id": 103, "bbox": [64.5, 8, 0.4, 16]})  # nothing left
    instances, images_dir = write_coco(tmp_path, data)
    with caplog.at_level("WARNING", logger="makd.formats.coco"):
        coco = read_coco(instances, images_dir)
    assert coco.skipped_boxes == ["5#102", "5#103"]
    assert [b.annotation_id for b in coco.boxes_of(5)] == [101]
    assert coco.box_ids() == ["5#101", "9#200"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{instances}: left out 2 boxes of zero width or height (first: 5#102, 5#103)"
    ]
    for entry in data["annotations"]:
        entry["bbox"] = [1, 1, 0, 0]
    instances, images_dir = write_coco(tmp_path / "all", data)
    with pytest.raises(MakdError, match=r"no usable box: of its 5 annotations 0 are crowd .* and 5 have zero width"):
        read_coco(instances, images_dir)


@pytest.mark.parametrize("degenerate", [0, 2])
def test_a_set_whose_boxes_are_all_crowd_regions_or_degenerate_is_refused(tmp_path: Path, degenerate: int):
    """Crowd regions are never training targets: a set of only those (and degenerate boxes) has nothing to learn."""
    data = tiny_coco_dict()
    for number, entry in enumerate(data["annotations"]):
        entry["iscrowd"] = 1
        if number < degenerate:
            entry["bbox"] = [3, 3, 0, 5]
    instances, images_dir = write_coco(tmp_path, data)
    with pytest.raises(MakdError) as caught:
        read_coco(instances, images_dir)
    assert str(caught.value) == (
        f"{instances}: no usable box: of its 4 annotations {4 - degenerate} are crowd regions (iscrowd 1, never "
        f"training targets) and {degenerate} have zero width or height; a detection set needs boxes with iscrowd 0 "
        "and a positive size"
    )


def test_missing_image_files_are_counted_and_the_first_named(tmp_path: Path):
    instances, images_dir = write_coco(tmp_path)
    (images_dir / "sub" / "a.png").unlink()
    (images_dir / "c.png").unlink()
    with pytest.raises(MakdError, match=r"2 of 3 images of .* are missing from .*images \(first: sub/a.png\)"):
        read_coco(instances, images_dir)
    assert read_coco(instances, images_dir, check_files=False).box_ids() == ["5#101", "5#102", "9#200"]
    with pytest.raises(MakdError, match=r"images folder .*nowhere of .* does not exist"):
        read_coco(instances, tmp_path / "nowhere")


def test_malformed_or_missing_json_is_one_line(tmp_path: Path):
    instances, images_dir = write_coco(tmp_path)
    instances.write_text(json.dumps(tiny_coco_dict())[:-10], encoding="utf-8")
    with pytest.raises(
        MakdError, match=r"instances.json: not valid JSON \(.* at line 1 column \d+\); is the file complete"
    ):
        read_coco(instances, images_dir)
    instances.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(MakdError, match=r"holds an array, expected an object"):
        read_coco(instances, images_dir)
    instances.write_bytes(b"\xff\xfe{")
    with pytest.raises(MakdError, match=r"not UTF-8 text"):
        read_coco(instances, images_dir)
    with pytest.raises(MakdError, match=r"COCO instances file .*absent.json does not exist"):
        read_coco(tmp_path / "absent.json", images_dir)


def test_train_and_test_categories_are_compared_by_id_and_by_name(tmp_path: Path):
    from makd.formats.coco import check_same_categories

    train = read_coco(*write_coco(tmp_path / "train"))
    data = tiny_coco_dict()
    check_same_categories(train, read_coco(*write_coco(tmp_path / "same", data)), "TRAIN", "TEST")
    data["categories"] = [{"id": 7, "name": "square"}, {"id": 3, "name": "circle"}, {"id": 12, "name": "triangle"}]
    renamed = read_coco(*write_coco(tmp_path / "renamed", data))  # the same ids, two of them named the other way
    with pytest.raises(MakdError) as caught:
        check_same_categories(train, renamed, "TRAIN", "TEST")
    assert str(caught.value) == (
        f"TEST and TRAIN give 2 category id(s) different names (first: id 3 is 'square' in {train.source} but "
        f"'circle' in {renamed.source}); the labels would mean other objects at test time: give both files the same "
        "'categories' list"
    )
    data = tiny_coco_dict()
    data["categories"][2]["id"] = 13
    for entry in data["annotations"]:
        entry["category_id"] = 13 if entry["category_id"] == 12 else entry["category_id"]
    other = read_coco(*write_coco(tmp_path / "other", data))
    with pytest.raises(MakdError, match=r"list different category ids \(ids only in TRAIN \(.*\): 12 'triangle'; ids "
                                        r"only in TEST \(.*\): 13 'triangle'\)"):  # fmt: skip
        check_same_categories(train, other, "TRAIN", "TEST")


def test_box_rows_made_from_another_instances_file_are_refused_by_hash(tmp_path: Path):
    from makd.formats.coco import box_rows_source_problem
    from makd.formats.files import sha256_file

    instances, _ = write_coco(tmp_path / "a")
    other, _ = write_coco(tmp_path / "b", {**tiny_coco_dict(), "info": {"description": "another export"}})
    meta = {"item": "box", "boxes": {"instances": str(instances), "instances_sha256": sha256_file(instances)}}
    assert box_rows_source_problem("rows.json", meta, instances, "KEY", "DETECTION.TRAIN_JSON") is None
    with pytest.raises(MakdError) as caught:
        box_rows_source_problem("rows.json", meta, other, "KEY", "DETECTION.TRAIN_JSON")
    message = str(caught.value)
    assert message.startswith(f"KEY rows.json was made from another instances file ({instances}, sha256 ")
    assert f"than DETECTION.TRAIN_JSON {other} (sha256 {sha256_file(other)[:12]})" in message
    assert message.endswith(f"run stage 2 --boxes on {other}, or point DETECTION.TRAIN_JSON at the file the rows "
                            "were made from")  # fmt: skip
    assert "no sidecar" in box_rows_source_problem("rows.json", None, other, "KEY", "DETECTION.TRAIN_JSON")
    assert box_rows_source_problem("rows.json", {"item": "image"}, other, "KEY", "DETECTION.TRAIN_JSON") is None
