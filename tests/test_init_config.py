"""tools/init_config.py: a folder of images -> a commented starting config that loads unchanged, with the recipe,
size, student and statistics that fit; bad folders are one line each and nothing is written (issue 21, item 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from makd.analysis.study import load_study
from makd.commands.init_config import main
from makd.config import load_cfg
from makd.demo.photos import write_photo_folders


def run(tmp_path: Path, data: Path, *extra: str) -> int:
    return main([str(data), "--out", str(tmp_path / "my.yaml"), "--no-progress", *extra])


def written(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.glob("my*.yaml"))


def flat_colour_images(root: Path, colours: dict[str, list[tuple[int, int, int]]], size=(32, 32)) -> None:
    for split in ("train", "test"):
        for name, values in colours.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i, colour in enumerate(values):
                Image.new("RGB", size, colour).save(root / split / name / f"{i}.png")


def grey_strokes(root: Path, classes: int, per_class: int, side: int = 28) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in range(classes):
            folder = root / split / f"digit{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.zeros((side, side), np.uint8)
                pixels[4:-4, 10 + label : 14 + label] = 255  # a stroke whose place is the class
                pixels = np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "L").save(folder / f"{i}.png")


def test_photos_get_the_photo_recipe_and_a_config_that_loads_unchanged(tmp_path, capsys):
    data = tmp_path / "photos"
    write_photo_folders(data, classes=3, train_per_class=8, test_per_class=2, min_side=100, max_side=150)
    assert run(tmp_path, data) == 0
    assert "recipe 'photos'" in capsys.readouterr().out
    cfg = load_cfg(str(tmp_path / "my.yaml"))
    assert cfg.DATASET.TYPE == "image_folder" and cfg.DATASET.NUM_CLASS == 3
    assert cfg.DATASET.TRAIN_IMAGE_PATH == f"{data.as_posix()}/train"
    assert cfg.DATASET.ASPECT_JSON == f"{data.as_posix()}/aspects_train.json"
    assert cfg.DATASET.QUESTIONS == f"{data.as_posix()}/questions.txt"
    assert cfg.MaKD.ASPECT_NUM == 0 and cfg.DISTILLER.TYPE == "MaKD" and cfg.DISTILLER.STUDENT == "resnet18"
    assert (cfg.DATASET.AUGMENT.CROP, list(cfg.DATASET.AUGMENT.SCALE), cfg.DATASET.AUGMENT.HFLIP) == (
        "rrc", [0.08, 1.0], True)  # fmt: skip
    # Shorter sides 100-150 px: the largest multiple of 16 under median / 1.143, so the test Resize never enlarges.
    assert cfg.DATASET.RESIZE_RATIO == 1.143 and cfg.DATASET.IMAGE_SIZE in (80, 96, 112)
    assert cfg.DATASET.IMAGE_SIZE * 1.143 <= 150
    # Every written value carries its reason.
    text = (tmp_path / "my.yaml").read_text()
    values = [line for line in text.splitlines() if ": " in line and not line.lstrip().startswith("#")]
    assert values and all("  # " in line for line in values if not line.rstrip().endswith(":"))
    study = load_study(tmp_path / "my_study.yaml")
    assert study.seeds == [0, 1, 2] and sorted(study.conditions) == ["baseline", "makd", "random"]


def test_mean_and_std_are_measured_per_channel(tmp_path):
    colours = {"warm": [(200, 40, 0), (180, 60, 20)], "cold": [(0, 40, 200), (20, 80, 240)]}
    flat_colour_images(tmp_path / "flat", colours)
    assert run(tmp_path, tmp_path / "flat") == 0
    cfg = load_cfg(str(tmp_path / "my.yaml"))
    values = np.array([c for group in colours.values() for c in group], np.float64) / 255  # one flat image each
    assert np.allclose(cfg.DATASET.MEAN, values.mean(axis=0), atol=1e-4)
    assert np.allclose(cfg.DATASET.STD, values.std(axis=0), atol=1e-4)
    assert cfg.DATASET.AUGMENT.CROP == "crop_pad" and cfg.DATASET.AUGMENT.PAD == 4  # 32-px colour: CIFAR's recipe
    assert (cfg.DATASET.IMAGE_SIZE, cfg.DATASET.RESIZE_RATIO, cfg.DISTILLER.STUDENT) == (32, 1.0, "resnet8x4")
    assert cfg.DATASET.VAL_FRACTION == 0.0  # two images per class: no validation split


def test_small_grey_images_are_not_mirrored(tmp_path, capsys):
    grey_strokes(tmp_path / "digits", classes=3, per_class=25)
    assert run(tmp_path, tmp_path / "digits") == 0
    assert "recipe 'small grey'" in capsys.readouterr().out
    cfg = load_cfg(str(tmp_path / "my.yaml"))
    assert cfg.DATASET.AUGMENT.HFLIP is False and list(cfg.DATASET.AUGMENT.SCALE) == [0.7, 1.0]
    assert (cfg.DATASET.IMAGE_SIZE, cfg.DATASET.RESIZE_RATIO, cfg.DISTILLER.STUDENT) == (28, 1.0, "resnet20")
    assert cfg.DATASET.MEAN[0] == cfg.DATASET.MEAN[1] == cfg.DATASET.MEAN[2] < 0.3
    assert cfg.DATASET.VAL_FRACTION == 0.1  # 25 images per class
    assert cfg.SOLVER.BATCH_SIZE == 8 and cfg.SOLVER.LR == pytest.approx(0.1 * 8 / 128)


def test_epochs_seeds_and_image_size_are_the_users_to_choose(tmp_path):
    grey_strokes(tmp_path / "digits", classes=2, per_class=3)
    assert run(tmp_path, tmp_path / "digits", "--epochs", "2", "--seeds", "4,5", "--image-size", "32") == 0
    cfg = load_cfg(str(tmp_path / "my.yaml"))
    assert cfg.SOLVER.EPOCHS == 2 and cfg.DATASET.IMAGE_SIZE == 32
    assert yaml.safe_load((tmp_path / "my_study.yaml").read_text())["seeds"] == [4, 5]


def bad_folder(tmp_path: Path, case: str) -> Path:
    data = tmp_path / case
    if case == "no_class_folders":
        (data / "train").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(data / "train" / "loose.png")
    elif case == "one_class":
        flat_colour_images(data, {"only": [(1, 2, 3)]})
    elif case == "empty_test":
        flat_colour_images(data, {"a": [(1, 2, 3)], "b": [(4, 5, 6)]})
        for image in (data / "test").rglob("*.png"):
            image.unlink()
    elif case == "no_test":
        flat_colour_images(data, {"a": [(1, 2, 3)], "b": [(4, 5, 6)]})
        for image in (data / "test").rglob("*.png"):
            image.unlink()
        for folder in (data / "test").iterdir():
            folder.rmdir()
        (data / "test").rmdir()
    elif case == "mixed_sizes":
        flat_colour_images(data, {"a": [(1, 2, 3)] * 4, "b": [(4, 5, 6)] * 4}, size=(28, 28))
        for i in range(4):
            Image.new("RGB", (640, 480)).save(data / "train" / "a" / f"big{i}.png")
            Image.new("RGB", (480, 640)).save(data / "train" / "b" / f"big{i}.png")
    elif case == "unreadable":
        flat_colour_images(data, {"a": [(1, 2, 3)], "b": [(4, 5, 6)]})
        (data / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    elif case == "empty_class":
        flat_colour_images(data, {"a": [(1, 2, 3)], "b": [(4, 5, 6)]})
        (data / "train" / "c").mkdir()
    elif case == "unknown_test_class":
        flat_colour_images(data, {"a": [(1, 2, 3)], "b": [(4, 5, 6)]})
        (data / "test" / "z").mkdir()
        Image.new("RGB", (32, 32)).save(data / "test" / "z" / "0.png")
    return data


BAD = {
    "no_class_folders": "holds images outside class folders (loose.png, ...); put images in",
    "one_class": "holds one class folder (only); a classifier needs at least two classes",
    "empty_test": "test holds no images (.png, .jpg, ...) in its class folders",
    "no_test": "test is not a folder; put images in",
    "mixed_sizes": "very mixed sizes (from 28x28 to 640x480 px",
    "unreadable": "broken.jpg: truncated or corrupt",
    "empty_class": "train/c holds no images",
    "unknown_test_class": "test/z is a class with no training images",
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_folders_are_one_line_and_nothing_is_written(tmp_path, capsys, case):
    data = bad_folder(tmp_path, case)
    assert run(tmp_path, data) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and BAD[case] in err[0], err
    assert written(tmp_path) == []


def test_mixed_sizes_are_settled_by_an_image_size(tmp_path):
    data = bad_folder(tmp_path, "mixed_sizes")
    assert run(tmp_path, data, "--image-size", "64") == 0
    assert load_cfg(str(tmp_path / "my.yaml")).DATASET.IMAGE_SIZE == 64


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, capsys):
    data = bad_folder(tmp_path, "unknown_test_class")
    (data / "test" / "z" / "0.png").unlink()
    (data / "test" / "z").rmdir()
    (tmp_path / "my_study.yaml").write_text("mine\n")
    assert run(tmp_path, data) == 2
    assert "--study" in capsys.readouterr().err and written(tmp_path) == ["my_study.yaml"]
    assert (tmp_path / "my_study.yaml").read_text() == "mine\n"
    assert run(tmp_path, data, "--overwrite") == 0 and written(tmp_path) == ["my.yaml", "my_study.yaml"]
