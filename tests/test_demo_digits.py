"""The digits set (makd/demo/digits.py): scikit-learn's real handwritten digits as a CIFAR-shaped image set with
LaViD-shaped per-class target files, written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tool_modules import load_tool

from makd.config import load_cfg
from makd.data.build import build_data
from makd.demo.classification import DemoFolderExistsError
from makd.demo.digits import CHOICE_FILE, OPTIONS, QUESTIONS, YES_NO_FILE, digit_images, write_digits
from makd.distillers.lavid import class_target_table

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "digits"
    return out, write_digits(out, seed=0)


def test_images_are_the_digits_in_class_folders_with_a_stratified_split(digits):
    out, info = digits
    assert (info["train"], info["test"], info["classes"]) == (1438, 359, 10)  # 1,797 digits, 20 % held out per class
    for digit in range(10):
        train = {p.name for p in (out / "train" / str(digit)).glob("*.png")}
        test = {p.name for p in (out / "test" / str(digit)).glob("*.png")}
        assert train and test and not train & test  # each digit in one split only
    image = Image.open(next((out / "train" / "0").glob("*.png")))
    assert image.size == (32, 32) and image.mode == "RGB"
    images, labels = digit_images()
    index = int(next((out / "test" / "7").glob("*.png")).stem)  # the file name is the digit's index
    assert labels[index] == 7 and np.array_equal(np.asarray(Image.open(out / "test" / "7" / f"{index}.png")),
                                                 np.asarray(images[index]))  # fmt: skip


def test_class_targets_have_lavid_shapes_and_read_as_lavid_tables(digits):
    out, _ = digits
    choice = json.loads((out / CHOICE_FILE).read_text())
    assert list(choice) == [str(d) for d in range(10)]
    rows = np.array(list(choice.values()))
    assert rows.shape == (10, QUESTIONS, OPTIONS) and np.allclose(rows.sum(axis=2), 1.0, atol=1e-5)
    names = [str(d) for d in range(10)]
    table, info = class_target_table(out / CHOICE_FILE, names)
    assert table.shape == (10, 250) and info["options_per_question"] == [5] * 50
    yes_no, _ = class_target_table(out / YES_NO_FILE, names)
    assert yes_no.shape == (10, 50) and bool(((yes_no >= 0) & (yes_no <= 1)).all())
    assert json.loads((out / f"{CHOICE_FILE}.meta.json").read_text())["note"].startswith("random per-class answers")


def test_the_shipped_digits_config_reads_the_set(digits):
    out, _ = digits
    paths = ["DATASET.TRAIN_IMAGE_PATH", str(out / "train"), "DATASET.TEST_IMAGE_PATH", str(out / "test")]
    cfg = load_cfg(
        str(REPO / "configs" / "digits" / "lavid.yaml"), [*paths, "LaViD.CLASS_TARGETS", str(out / CHOICE_FILE)]
    )
    data = build_data(cfg)
    assert (len(data.train), len(data.test), data.num_classes) == (1438, 359, 10)
    assert data.class_names == [str(d) for d in range(10)]
    assert torch.bincount(torch.tensor(data.train.labels)).tolist()[0] == len(list((out / "train" / "0").glob("*")))


def test_an_existing_folder_is_not_replaced_without_overwrite(digits, tmp_path, capsys):
    out, _ = digits
    with pytest.raises(DemoFolderExistsError, match="digits folder"):
        write_digits(out)
    make_digits = load_tool("make_digits")
    assert make_digits.main(["--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
