"""The paper's datasets through torchvision's own classes, on their official splits.

torchvision finds (or, with DATASET.DOWNLOAD True, downloads) the files under DATASET.ROOT; we
keep its file lists and labels. Ids are paths relative to the folder stage 2 is pointed at
(`--images`), listed per dataset in docs/data.md, so stage-2 output joins without renaming.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torchvision.datasets as tvd

from makd.data.image_index import DATASET_TYPES, ImageIndex
from makd.data.splits import stratified_split
from makd.errors import ConfigError
from makd.formats.errors import DatasetMissingError
from makd.formats.image_ids import image_id
from makd.formats.split_files import read_split_file

# Caltech101 has no official split; without split files we hold out this share of every class,
# the 70/30 trainval/test proportion of the widely used CoOp split, with a fixed seed.
CALTECH101_TEST_FRACTION = 0.3
CALTECH101_SPLIT_SEED = 0


def _open(cfg, name: str, expected: Path, make: Callable[[bool], Any]) -> Any:
    """`make(download)`, with torchvision's various failures rephrased as one line naming the folder."""
    root, download = cfg.DATASET.ROOT, bool(cfg.DATASET.DOWNLOAD)
    hint = "set DATASET.DOWNLOAD True or place the files there (see docs/data.md)"
    if not download and not expected.exists():  # checked first: some classes create folders before failing
        raise DatasetMissingError(f"DATASET.TYPE {name}: no data at {expected} (DATASET.ROOT {root}); {hint}")
    try:
        return make(download)
    except ImportError as err:
        raise ConfigError(f"DATASET.TYPE {name} needs the {err.name} package; pip install {err.name}") from err
    except Exception as err:  # RuntimeError, FileNotFoundError, URLError, ValueError, ... depending on the class
        said = (str(err).splitlines() or [type(err).__name__])[0]
        if "scipy" in said.lower():  # StanfordCars reports its missing dependency as a RuntimeError
            raise ConfigError(f"DATASET.TYPE {name} needs the scipy package; pip install scipy") from err
        if download:
            raise DatasetMissingError(
                f"DATASET.TYPE {name}: could not get the data into {root} ({said}); "
                f"place the files at {expected} and set DATASET.DOWNLOAD False"
            ) from err
        raise DatasetMissingError(
            f"DATASET.TYPE {name}: incomplete data at {expected} (DATASET.ROOT {root}; torchvision: {said}); {hint}"
        ) from err


def _private(dataset: Any, attribute: str) -> Any:
    """A torchvision dataset's internal file/label list (there is no public accessor for the paths)."""
    if not hasattr(dataset, attribute):
        raise RuntimeError(
            f"torchvision's {type(dataset).__name__} has no {attribute!r}; this torchvision version is not supported"
        )
    return getattr(dataset, attribute)


def _files_index(name: str, split: str, paths: list, labels: list[int], classes: list[str], images: Path) -> ImageIndex:
    paths = [str(p) for p in paths]
    ids = [image_id(p, images) for p in paths]
    return ImageIndex(ids, [int(x) for x in labels], list(classes), f"{name} {split} {images}", str(images), paths)


def _concat(first: ImageIndex, second: ImageIndex, source: str) -> ImageIndex:
    return ImageIndex(
        first.ids + second.ids,
        first.labels + second.labels,
        first.class_names,
        source,
        first.root,
        first.paths + second.paths,
    )


@DATASET_TYPES.register("caltech101")
def build_caltech101(cfg) -> tuple[ImageIndex, ImageIndex]:
    """All of 101_ObjectCategories (BACKGROUND_Google dropped, as torchvision does), split by split files
    (ids relative to 101_ObjectCategories) or else by a fixed stratified 70/30 carve."""
    root = Path(cfg.DATASET.ROOT)
    images = root / "caltech101" / "101_ObjectCategories"
    ds = _open(cfg, "caltech101", images, lambda d: tvd.Caltech101(str(root), download=d))
    categories, numbers = _private(ds, "categories"), _private(ds, "index")
    labels = [int(y) for y in _private(ds, "y")]
    paths = [images / categories[y] / f"image_{n:04d}.jpg" for y, n in zip(labels, numbers)]
    everything = _files_index("caltech101", "all", paths, labels, categories, images)
    train_file, test_file = cfg.DATASET.TRAIN_SPLIT_FILE, cfg.DATASET.TEST_SPLIT_FILE
    if train_file or test_file:
        listed = {}
        for key, path in (("train", train_file), ("test", test_file)):
            if path:
                listed[key] = read_split_file(path, f"DATASET.{key.upper()}_SPLIT_FILE", everything.ids, str(images))
        other = "test" if "train" in listed else "train"
        if other not in listed:  # one file given: the other split is the rest
            taken = set(listed["train" if other == "test" else "test"])
            listed[other] = [p for p in range(len(everything)) if p not in taken]
        train_pos, test_pos = listed["train"], listed["test"]
        if set(train_pos) & set(test_pos):
            raise ConfigError("DATASET.TRAIN_SPLIT_FILE and TEST_SPLIT_FILE share images; make them disjoint")
    else:
        train_pos, test_pos = stratified_split(
            everything.ids, everything.labels, CALTECH101_TEST_FRACTION, CALTECH101_SPLIT_SEED
        )
    train, test = everything.subset(train_pos), everything.subset(test_pos)
    train.source, test.source = f"caltech101 train {images}", f"caltech101 test {images}"
    return train, test


@DATASET_TYPES.register("oxford_pets", "oxfordiiitpet", "oxford_iiit_pet")
def build_oxford_pets(cfg) -> tuple[ImageIndex, ImageIndex]:
    """Official trainval (3,680) / test (3,669); ids relative to oxford-iiit-pet/images ("Abyssinian_1")."""
    root = Path(cfg.DATASET.ROOT)
    images = root / "oxford-iiit-pet" / "images"

    def split(name: str) -> Any:
        return _open(
            cfg, "oxford_pets", root / "oxford-iiit-pet", lambda d: tvd.OxfordIIITPet(str(root), name, download=d)
        )

    trainval, test = split("trainval"), split("test")
    classes = list(trainval.classes)
    return (
        _files_index(
            "oxford_pets", "trainval", _private(trainval, "_images"), _private(trainval, "_labels"), classes, images
        ),
        _files_index("oxford_pets", "test", _private(test, "_images"), _private(test, "_labels"), classes, images),
    )


@DATASET_TYPES.register("flowers102", "flowers")
def build_flowers102(cfg) -> tuple[ImageIndex, ImageIndex]:
    """Official train + val (2,040) for training, test (6,149); ids relative to flowers-102/jpg ("image_00001")."""
    root = Path(cfg.DATASET.ROOT)
    images = root / "flowers-102" / "jpg"

    def split(name: str) -> ImageIndex:
        ds = _open(cfg, "flowers102", root / "flowers-102", lambda d: tvd.Flowers102(str(root), name, download=d))
        return _files_index(
            "flowers102", name, _private(ds, "_image_files"), _private(ds, "_labels"), tvd.Flowers102.classes, images
        )

    return _concat(split("train"), split("val"), f"flowers102 train+val {images}"), split("test")


@DATASET_TYPES.register("dtd")
def build_dtd(cfg) -> tuple[ImageIndex, ImageIndex]:
    """Partition 1: train1 + val1 for training, test1 for testing; ids relative to dtd/dtd/images
    ("banded/banded_0002"). Labels come from the class folder over all splits, so a class absent from
    one split cannot shift the others (torchvision numbers the classes of each split separately)."""
    root = Path(cfg.DATASET.ROOT)
    images = root / "dtd" / "dtd" / "images"
    files = {}
    for name in ("train", "val", "test"):
        ds = _open(cfg, "dtd", root / "dtd" / "dtd", lambda d, name=name: tvd.DTD(str(root), name, download=d))
        files[name] = [Path(p) for p in _private(ds, "_image_files")]
    classes = sorted({p.parent.name for paths in files.values() for p in paths})
    label_of = {c: i for i, c in enumerate(classes)}

    def index(split: str, paths: list[Path]) -> ImageIndex:
        return _files_index("dtd", split, paths, [label_of[p.parent.name] for p in paths], classes, images)

    return index("train+val", files["train"] + files["val"]), index("test", files["test"])


@DATASET_TYPES.register("fgvc_aircraft", "fgvcaircraft", "aircraft")
def build_fgvc_aircraft(cfg) -> tuple[ImageIndex, ImageIndex]:
    """Official trainval (6,667) / test (3,333), 100 variants; ids relative to fgvc-aircraft-2013b/data/images."""
    root = Path(cfg.DATASET.ROOT)
    images = root / "fgvc-aircraft-2013b" / "data" / "images"

    def split(name: str) -> ImageIndex:
        ds = _open(
            cfg, "fgvc_aircraft", root / "fgvc-aircraft-2013b", lambda d: tvd.FGVCAircraft(str(root), name, download=d)
        )
        return _files_index(
            "fgvc_aircraft", name, _private(ds, "_image_files"), _private(ds, "_labels"), ds.classes, images
        )

    return split("trainval"), split("test")


@DATASET_TYPES.register("stanford_cars", "stanfordcars", "cars")
def build_stanford_cars(cfg) -> tuple[ImageIndex, ImageIndex]:
    """Official train (8,144) / test (8,041); ids relative to stanford_cars/cars_train (train) and
    stanford_cars/cars_test (test), e.g. "00001" in both (test rows come only from TEST_ASPECT_JSON)."""
    root = Path(cfg.DATASET.ROOT)

    def split(name: str) -> ImageIndex:
        ds = _open(
            cfg, "stanford_cars", root / "stanford_cars", lambda d: tvd.StanfordCars(str(root), name, download=d)
        )
        samples = _private(ds, "_samples")
        images = root / "stanford_cars" / f"cars_{name}"
        return _files_index("stanford_cars", name, [s[0] for s in samples], [s[1] for s in samples], ds.classes, images)

    return split("train"), split("test")


@DATASET_TYPES.register("cifar100")
def build_cifar100(cfg) -> tuple[ImageIndex, ImageIndex]:
    """Official 50,000 / 10,000 images held in memory; ids "train/00000".. and "test/00000"..
    (tools/export_images.py writes them as PNGs under those ids for stage 2)."""
    root = Path(cfg.DATASET.ROOT)

    def split(name: str) -> ImageIndex:
        ds = _open(
            cfg, "cifar100", root / "cifar-100-python", lambda d: tvd.CIFAR100(str(root), name == "train", download=d)
        )
        pixels = _private(ds, "data")  # uint8 [N, 32, 32, 3]
        ids = [f"{name}/{i:05d}" for i in range(len(pixels))]
        source = f"cifar100 {name} {root / 'cifar-100-python'}"
        return ImageIndex(ids, [int(t) for t in ds.targets], list(ds.classes), source, "", None, pixels)

    return split("train"), split("test")
