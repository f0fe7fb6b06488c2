"""File-backed layouts: class folders, the official flat-PNG release, "auto", split files, image reading."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_data_helpers import make_cfg, pixels, random_image, write_class_folders, write_release

from makd.commands.make_split_files import main as make_split_files
from makd.data.image_index import ImageIndex
from makd.data.layouts import build_image_indexes
from makd.data.layouts.folders import detect_layout, parse_release_name
from makd.data.splits import stratified_split
from makd.errors import ConfigError
from makd.formats.errors import DatasetMissingError
from makd.formats.image_decode import ImageLoadError, read_rgb
from makd.formats.split_files import read_split_file


def folder_cfg(tmp_path, **extra):
    settings = {
        "DATASET.TYPE": "image_folder",
        "DATASET.TRAIN_IMAGE_PATH": str(tmp_path / "train"),
        "DATASET.TEST_IMAGE_PATH": str(tmp_path / "test"),
    }
    settings.update({f"DATASET.{k}": v for k, v in extra.items()})
    return make_cfg(settings)


def test_image_folder_ids_labels_and_class_names(tmp_path):
    train_ids = write_class_folders(tmp_path / "train", {"zebra": 2, "ant": 3, "moth": 1})
    write_class_folders(tmp_path / "test", {"zebra": 1, "ant": 1}, seed=1, ext=".jpg")
    train, test = build_image_indexes(folder_cfg(tmp_path))
    assert train.ids == train_ids == ["ant/img_0", "ant/img_1", "ant/img_2", "moth/img_0", "zebra/img_0", "zebra/img_1"]
    assert train.class_names == ["ant", "moth", "zebra"] and test.class_names == train.class_names
    assert train.labels == [0, 0, 0, 1, 2, 2]
    assert test.ids == ["ant/img_0", "zebra/img_0"] and test.labels == [0, 2]  # labels follow the train classes
    assert train.root == str(tmp_path / "train") and "image_folder train" in train.source
    assert pixels(train.load(3)).tolist() == pixels(Image.open(tmp_path / "train/moth/img_0.png")).tolist()
    assert len(train.subset([5, 0])) == 2 and train.subset([5, 0]).ids == ["zebra/img_1", "ant/img_0"]


def test_image_folder_rejects_unknown_test_class_and_loose_files(tmp_path):
    write_class_folders(tmp_path / "train", {"a": 1, "b": 1})
    write_class_folders(tmp_path / "test", {"a": 1, "c": 1})
    with pytest.raises(ConfigError, match=r"test classes c of .*test have no training images"):
        build_image_indexes(folder_cfg(tmp_path))
    random_image(0).save(tmp_path / "train" / "loose.png")
    with pytest.raises(ConfigError, match=r"'loose' is not inside a class folder"):
        build_image_indexes(folder_cfg(tmp_path))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])  # wide grey modes: tests/test_data_decode.py
def test_every_image_is_read_as_rgb(tmp_path, mode):
    source = random_image(3, mode="RGBA" if mode in ("RGBA", "LA") else "RGB")
    image = source.convert(mode) if mode not in ("P",) else source.quantize(colors=6)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    image.save(path)
    loaded = read_rgb(path)
    assert loaded.mode == "RGB" and loaded.size == (12, 9)
    expected = np.asarray(Image.open(path).convert("RGB"))
    if mode == "L":  # grey value repeated on the three channels
        assert (np.asarray(loaded) == np.asarray(image)[..., None]).all()
    assert (np.asarray(loaded) == expected).all()


def test_palette_with_transparency_reads_as_its_colours(tmp_path):
    image = random_image(4).quantize(colors=4)
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png")
    palette = np.array(image.getpalette()[:12]).reshape(4, 3)
    assert (np.asarray(read_rgb(tmp_path / "p.png")) == palette[np.asarray(image)]).all()


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    good = tmp_path / "good.png"
    random_image(0, size=(64, 64)).save(good)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    for bad in (truncated, garbage, tmp_path / "gone.png"):
        with pytest.raises(ImageLoadError, match=rf"^cannot read image {bad}: \S"):
            read_rgb(bad)
    assert issubclass(ImageLoadError, ValueError)
    index = ImageIndex(["cut"], [0], ["c"], "t", str(tmp_path), [str(truncated)])
    with pytest.raises(ImageLoadError, match="cut.png"):
        index.load(0)


def test_release_names_with_underscores():
    assert parse_release_name("x/American_Pit_Bull_Terrier_1_12.png") == ("American_Pit_Bull_Terrier", 1)
    assert parse_release_name("cat_0_1.png") == ("cat", 0)
    with pytest.raises(ValueError, match="not <class>_<label>_<index>"):
        parse_release_name("cat_x_1.png")


def test_release_layout(tmp_path):
    classes = ["Abyssinian", "American_Pit_Bull_Terrier", "Bengal"]
    train_ids = write_release(tmp_path / "train", classes, per_class=2)
    write_release(tmp_path / "test", classes, per_class=1, seed=1)
    cfg = folder_cfg(tmp_path, TYPE="release_png")
    train, test = build_image_indexes(cfg)
    assert train.class_names == classes and test.class_names == classes
    assert train.ids == train_ids and "American_Pit_Bull_Terrier_1_0" in train.ids
    assert [train.labels[train.ids.index(f"{c}_{k}_0")] for k, c in enumerate(classes)] == [0, 1, 2]
    assert test.ids == ["Abyssinian_0_0", "American_Pit_Bull_Terrier_1_0", "Bengal_2_0"] and test.labels == [0, 1, 2]
    # auto sees the same layout
    auto_train, _ = build_image_indexes(folder_cfg(tmp_path, TYPE="auto"))
    assert (auto_train.ids, auto_train.labels, auto_train.class_names) == (train.ids, train.labels, train.class_names)


def test_release_layout_errors(tmp_path):
    write_release(tmp_path / "train", ["cat", "dog"], per_class=1)
    write_release(tmp_path / "test", ["cat", "dog"], per_class=1)
    random_image(0).save(tmp_path / "test" / "wolf_1_7.png")
    with pytest.raises(ConfigError, match=r"label 1 is 'dog' in .*dog_1_0.png but 'wolf' in .*wolf_1_7.png"):
        build_image_indexes(folder_cfg(tmp_path, TYPE="release_png"))
    (tmp_path / "test" / "wolf_1_7.png").unlink()
    random_image(0).save(tmp_path / "test" / "fox_4_0.png")
    with pytest.raises(ConfigError, match=r"labels \[2, 3\] appear in no file name"):
        build_image_indexes(folder_cfg(tmp_path, TYPE="release_png"))


def test_auto_layout_detection(tmp_path):
    write_class_folders(tmp_path / "folders", {"a": 1})
    assert detect_layout(str(tmp_path / "folders")) == "image_folder"
    write_release(tmp_path / "flat", ["a_b"], per_class=1)
    assert detect_layout(str(tmp_path / "flat")) == "release_png"
    random_image(0).save(tmp_path / "flat" / "holiday.png")
    with pytest.raises(ConfigError, match=r"'holiday.png' is not a PNG/JPG named <class>_<label>_<index>"):
        detect_layout(str(tmp_path / "flat"))
    random_image(0).save(tmp_path / "folders" / "cat_0_0.png")
    with pytest.raises(ConfigError, match="both folders .* and loose images"):
        detect_layout(str(tmp_path / "folders"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no images.*set DATASET.TYPE image_folder"):
        detect_layout(str(tmp_path / "empty"))


def test_unknown_type_and_missing_folders(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown DATASET.TYPE 'imagefolder'; did you mean 'image_folder'"):
        build_image_indexes(make_cfg({"DATASET.TYPE": "imagefolder"}))
    with pytest.raises(DatasetMissingError, match=rf"DATASET.TRAIN_IMAGE_PATH {tmp_path / 'train'} is not a folder"):
        build_image_indexes(folder_cfg(tmp_path))
    with pytest.raises(ConfigError, match="DATASET.TEST_IMAGE_PATH is empty"):
        write_class_folders(tmp_path / "train", {"a": 1})
        build_image_indexes(folder_cfg(tmp_path, TEST_IMAGE_PATH=""))


def test_split_files_on_one_root(tmp_path):
    root = tmp_path / "images"
    ids = write_class_folders(root, {"001.Albatross": 3, "002.Auklet": 3})
    (tmp_path / "train.txt").write_text("001.Albatross/img_0\n002.Auklet/img_2\n\n001.Albatross/img_1\n")
    (tmp_path / "test.txt").write_text("002.Auklet/img_0\n001.Albatross/img_2\n")
    settings = dict(TRAIN_IMAGE_PATH=str(root), TEST_IMAGE_PATH=str(root), TRAIN_SPLIT_FILE=str(tmp_path / "train.txt"))
    train, test = build_image_indexes(folder_cfg(tmp_path, **settings, TEST_SPLIT_FILE=str(tmp_path / "test.txt")))
    assert train.ids == ["001.Albatross/img_0", "001.Albatross/img_1", "002.Auklet/img_2"] and train.labels == [0, 0, 1]
    assert test.ids == ["001.Albatross/img_2", "002.Auklet/img_0"] and test.labels == [0, 1]
    # only a test list on a shared root: train is the rest of the root
    rest, _ = build_image_indexes(
        folder_cfg(tmp_path, **{**settings, "TRAIN_SPLIT_FILE": ""}, TEST_SPLIT_FILE=str(tmp_path / "test.txt"))
    )
    assert rest.ids == [i for i in ids if i not in test.ids]
    (tmp_path / "test.txt").write_text("002.Auklet/img_2\n")
    with pytest.raises(ConfigError, match=r"1 images are in both the train and the test split .*002.Auklet/img_2"):
        build_image_indexes(folder_cfg(tmp_path, **settings, TEST_SPLIT_FILE=str(tmp_path / "test.txt")))


def test_split_file_errors(tmp_path):
    known = ["a/1", "a/2", "b/1"]
    (tmp_path / "s.txt").write_text("a/1\na/2.png\nb/9\n")
    with pytest.raises(ConfigError, match=r"KEY .*s.txt: 2 ids are not images under ROOT \(first: a/2.png, b/9\)"):
        read_split_file(str(tmp_path / "s.txt"), "KEY", known, "ROOT")
    (tmp_path / "s.txt").write_text("a/1\nb/1\na/1\n")
    with pytest.raises(ConfigError, match=r"s.txt:3: id 'a/1' repeats line 1; list each id once"):
        read_split_file(str(tmp_path / "s.txt"), "KEY", known, "ROOT")
    with pytest.raises(ConfigError, match="does not exist"):
        read_split_file(str(tmp_path / "none.txt"), "KEY", known, "ROOT")


def test_stratified_split_is_stratified_deterministic_and_disjoint():
    ids = [f"c{c}/{k}" for c in range(4) for k in range(10 + c)]
    labels = [int(i[1]) for i in ids]
    kept, held = stratified_split(ids, labels, 0.2, seed=7)
    assert sorted(kept + held) == list(range(len(ids))) and not set(kept) & set(held)
    assert [sum(labels[p] == c for p in held) for c in range(4)] == [2, 2, 2, 3]  # round(0.2 * n_c)
    assert stratified_split(ids, labels, 0.2, seed=7) == (kept, held)
    assert stratified_split(ids, labels, 0.2, seed=8)[1] != held
    # a class's carve does not move when other classes change
    more = ids + [f"c9/{k}" for k in range(5)]
    more_labels = labels + [9] * 5
    held_more = stratified_split(more, more_labels, 0.2, seed=7)[1]
    assert [more[p] for p in held_more if more_labels[p] == 0] == [ids[p] for p in held if labels[p] == 0]
    assert stratified_split(["x"], [0], 0.9, seed=0) == ([0], [])  # a class always keeps one image


def test_make_split_files_cub_and_stratified(tmp_path, capsys):
    cub = tmp_path / "CUB_200_2011"
    write_class_folders(cub / "images", {"001.Black_footed_Albatross": 2, "002.Laysan_Albatross": 2}, ext=".jpg")
    (cub / "images.txt").write_text(
        "1 001.Black_footed_Albatross/img_0.jpg\n2 001.Black_footed_Albatross/img_1.jpg\n"
        "3 002.Laysan_Albatross/img_0.jpg\n4 002.Laysan_Albatross/img_1.jpg\n"
    )
    (cub / "train_test_split.txt").write_text("1 1\n2 0\n3 0\n4 1\n")
    assert make_split_files(["cub", str(cub), "--out-dir", str(tmp_path / "splits")]) == 0
    assert (tmp_path / "splits/train.txt").read_text() == (
        "001.Black_footed_Albatross/img_0\n002.Laysan_Albatross/img_1\n"
    )
    assert (
        tmp_path / "splits/test.txt"
    ).read_text() == "001.Black_footed_Albatross/img_1\n002.Laysan_Albatross/img_0\n"
    cfg = folder_cfg(
        tmp_path,
        TRAIN_IMAGE_PATH=str(cub / "images"),
        TEST_IMAGE_PATH="",
        TRAIN_SPLIT_FILE=str(tmp_path / "splits/train.txt"),
        TEST_SPLIT_FILE=str(tmp_path / "splits/test.txt"),
    )
    train, test = build_image_indexes(cfg)
    assert (len(train), len(test), train.labels, test.labels) == (2, 2, [0, 1], [0, 1])

    write_class_folders(tmp_path / "mini", {"n01": 10, "n02": 5})
    assert (
        make_split_files(
            ["stratified", str(tmp_path / "mini"), "--test-fraction", "0.2", "--out-dir", str(tmp_path / "m")]
        )
        == 0
    )
    test_ids = (tmp_path / "m/test.txt").read_text().split()
    assert len(test_ids) == 3 and sum(i.startswith("n01/") for i in test_ids) == 2
    assert "wrote 12 train and 3 test ids" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        make_split_files(["cub", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "x")])
    assert "images.txt does not exist" in capsys.readouterr().err
