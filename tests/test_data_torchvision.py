"""torchvision layouts on tiny fake copies written in the exact folder structure torchvision reads.

Each index is checked against the real torchvision class: same images (pixels), same labels, same
split sizes, ids relative to the folder stage 2 is pointed at. Nothing is downloaded.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torchvision.datasets as tvd
from PIL import Image
from test_data_helpers import make_cfg, pixels, random_image

from makd.data.layouts import build_image_indexes
from makd.formats.errors import DatasetMissingError


def tv_cfg(root, type_, **extra):
    return make_cfg({"DATASET.TYPE": type_, "DATASET.ROOT": str(root), **{f"DATASET.{k}": v for k, v in extra.items()}})


def assert_matches_torchvision(index, datasets):
    """`index` lists, in order, the samples of the torchvision datasets `datasets` (concatenated)."""
    samples = [ds[i] for ds in datasets for i in range(len(ds))]
    assert len(index) == len(samples)
    for i, (image, label) in enumerate(samples):
        assert index.labels[i] == label
        assert (pixels(index.load(i)) == pixels(image.convert("RGB"))).all(), index.ids[i]


def test_oxford_pets(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    breeds = ["Abyssinian", "american_bulldog", "Bengal"]
    rows = {"trainval": [], "test": []}
    for label, breed in enumerate(breeds):
        for k in range(1, 4):
            random_image(label * 10 + k, mode="L" if k == 3 else "RGB").save(base / "images" / f"{breed}_{k}.jpg")
            rows["test" if k == 3 else "trainval"].append(f"{breed}_{k} {label + 1} {1 + (label > 0)} {k}")
    for split, lines in rows.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    train, test = build_image_indexes(tv_cfg(tmp_path, "oxford_pets"))
    assert train.root == str(base / "images")
    assert train.ids == [
        "Abyssinian_1",
        "Abyssinian_2",
        "american_bulldog_1",
        "american_bulldog_2",
        "Bengal_1",
        "Bengal_2",
    ]
    assert test.ids == ["Abyssinian_3", "american_bulldog_3", "Bengal_3"] and test.labels == [0, 1, 2]
    assert train.class_names == ["Abyssinian", "American Bulldog", "Bengal"] == test.class_names
    assert_matches_torchvision(train, [tvd.OxfordIIITPet(str(tmp_path), "trainval")])
    assert_matches_torchvision(test, [tvd.OxfordIIITPet(str(tmp_path), "test")])
    assert test.load(0).mode == "RGB"  # a grayscale JPEG still gives 3 channels


def test_dtd_trains_on_train_plus_val(tmp_path):
    data = tmp_path / "dtd" / "dtd"
    (data / "labels").mkdir(parents=True)
    classes = ["banded", "zigzagged", "cracked"]
    lines = {"train": [], "val": [], "test": []}
    for c, name in enumerate(classes):
        (data / "images" / name).mkdir(parents=True)
        for k, split in enumerate(["train", "train", "val", "test"], start=1):
            random_image(c * 10 + k).save(data / "images" / name / f"{name}_{k:04d}.jpg")
            lines[split].append(f"{name}/{name}_{k:04d}.jpg")
    for split, rows in lines.items():
        (data / "labels" / f"{split}1.txt").write_text("\n".join(rows) + "\n")
    train, test = build_image_indexes(tv_cfg(tmp_path, "dtd"))
    assert train.class_names == ["banded", "cracked", "zigzagged"]
    assert train.ids[:3] == ["banded/banded_0001", "banded/banded_0002", "zigzagged/zigzagged_0001"]
    assert len(train) == 9 and len(test) == 3 and test.ids[2] == "cracked/cracked_0004" and test.labels == [0, 2, 1]
    assert train.root == str(data / "images")
    assert_matches_torchvision(train, [tvd.DTD(str(tmp_path), "train"), tvd.DTD(str(tmp_path), "val")])
    assert_matches_torchvision(test, [tvd.DTD(str(tmp_path), "test")])


def test_fgvc_aircraft(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    (data / "images").mkdir(parents=True)
    variants = ["707-320", "A300B4", "Cessna 172"]
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    lines = {"trainval": [], "test": []}
    for n in range(9):
        name = f"{1000000 + n:07d}"
        random_image(n).save(data / "images" / f"{name}.jpg")
        lines["test" if n % 3 == 0 else "trainval"].append(f"{name} {variants[n % 3 - 1 if n % 3 else 2]}")
    for split, rows in lines.items():
        (data / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")
    train, test = build_image_indexes(tv_cfg(tmp_path, "fgvc_aircraft"))
    assert train.class_names == variants and train.ids[0] == "1000001" and train.root == str(data / "images")
    assert test.ids == ["1000000", "1000003", "1000006"] and test.labels == [2, 2, 2]
    assert_matches_torchvision(train, [tvd.FGVCAircraft(str(tmp_path), "trainval")])
    assert_matches_torchvision(test, [tvd.FGVCAircraft(str(tmp_path), "test")])


def write_caltech(root, counts):
    cats = root / "caltech101" / "101_ObjectCategories"
    for c, (name, n) in enumerate(counts.items()):
        (cats / name).mkdir(parents=True)
        for k in range(1, n + 1):
            random_image(c * 100 + k, mode="L" if k == 1 else "RGB").save(cats / name / f"image_{k:04d}.jpg")
    return cats


def test_caltech101_fixed_carve_and_split_files(tmp_path):
    cats = write_caltech(tmp_path, {"BACKGROUND_Google": 2, "Faces": 10, "accordion": 5})
    train, test = build_image_indexes(tv_cfg(tmp_path, "caltech101"))
    assert train.class_names == ["Faces", "accordion"] and train.root == str(cats)
    assert not any(i.startswith("BACKGROUND_Google/") for i in train.ids + test.ids)
    assert sorted(train.ids + test.ids) == sorted(
        [f"Faces/image_{k:04d}" for k in range(1, 11)] + [f"accordion/image_{k:04d}" for k in range(1, 6)]
    )
    assert [test.labels.count(c) for c in (0, 1)] == [3, 2]  # 30% of each class, fixed
    assert build_image_indexes(tv_cfg(tmp_path, "caltech101"))[1].ids == test.ids
    # torchvision's Caltech101.__getitem__ imports scipy (absent here), so compare with the file it would open
    everything = tvd.Caltech101(str(tmp_path))
    samples = {
        f"{everything.categories[y]}/image_{n:04d}": (
            Image.open(cats / everything.categories[y] / f"image_{n:04d}.jpg"),
            y,
        )
        for y, n in zip(everything.y, everything.index)
    }
    for index in (train, test):
        assert_matches_torchvision(index, [[samples[i] for i in index.ids]])

    (tmp_path / "test.txt").write_text("accordion/image_0002\nFaces/image_0001\n")
    train, test = build_image_indexes(tv_cfg(tmp_path, "caltech101", TEST_SPLIT_FILE=str(tmp_path / "test.txt")))
    assert test.ids == ["Faces/image_0001", "accordion/image_0002"] and len(train) == 13


def test_cifar100_in_memory_with_split_ids(tmp_path, monkeypatch):
    # The fake batches cannot carry the real files' md5 sums; only that check is bypassed, the rest is torchvision's.
    monkeypatch.setattr(tvd.cifar, "check_integrity", lambda *args, **kwargs: True)
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    rng = np.random.default_rng(0)
    data = {s: rng.integers(0, 256, size=(n, 3072), dtype=np.uint8) for s, n in (("train", 6), ("test", 3))}
    for split, array in data.items():
        labels = [k % 3 for k in range(len(array))]
        with open(base / split, "wb") as fh:
            pickle.dump({"data": array, "fine_labels": labels, "coarse_labels": [0] * len(array)}, fh)
    with open(base / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": ["apple", "bear", "cloud"], "coarse_label_names": ["x"]}, fh)
    train, test = build_image_indexes(tv_cfg(tmp_path, "cifar100"))
    assert train.ids == [f"train/{k:05d}" for k in range(6)] and test.ids == ["test/00000", "test/00001", "test/00002"]
    assert train.class_names == ["apple", "bear", "cloud"] and train.labels == [0, 1, 2, 0, 1, 2]
    assert train.paths is None and train.root == ""
    # row k of the pickled batch is image k in CHW order
    assert (pixels(train.load(4)) == data["train"][4].reshape(3, 32, 32).transpose(1, 2, 0)).all()
    assert_matches_torchvision(train, [tvd.CIFAR100(str(tmp_path), train=True)])
    sub = test.subset([2, 0])
    assert sub.ids == ["test/00002", "test/00000"] and (pixels(sub.load(0)) == pixels(test.load(2))).all()


@pytest.mark.parametrize(
    ("type_", "folder"),
    [
        ("caltech101", "caltech101/101_ObjectCategories"),
        ("oxford_pets", "oxford-iiit-pet"),
        ("flowers102", "flowers-102"),
        ("dtd", "dtd/dtd"),
        ("fgvc_aircraft", "fgvc-aircraft-2013b"),
        ("stanford_cars", "stanford_cars"),
        ("cifar100", "cifar-100-python"),
    ],
)
def test_missing_dataset_says_where_and_how(tmp_path, type_, folder):
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DatasetMissingError) as caught:
        build_image_indexes(tv_cfg(root, type_))
    message = str(caught.value)
    assert message == (
        f"DATASET.TYPE {type_}: no data at {root / folder} (DATASET.ROOT {root}); "
        "set DATASET.DOWNLOAD True or place the files there (see docs/data.md)"
    )
    assert list(root.iterdir()) == []  # nothing created on the way


def test_incomplete_dataset_is_rephrased(tmp_path):
    (tmp_path / "flowers-102" / "jpg").mkdir(parents=True)  # images folder but no label files
    with pytest.raises(
        DatasetMissingError,
        match=r"^DATASET.TYPE flowers102: incomplete data at .*flowers-102 .*"
        r"torchvision: Dataset not found or corrupted.*DOWNLOAD True",
    ):
        build_image_indexes(tv_cfg(tmp_path, "flowers102"))
