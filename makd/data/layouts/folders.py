"""File-backed layouts: class folders (`root/<class>/<image>`), the official flat-PNG release, and "auto".

Train and test come from DATASET.TRAIN_IMAGE_PATH / TEST_IMAGE_PATH, optionally narrowed by
DATASET.TRAIN_SPLIT_FILE / TEST_SPLIT_FILE (then both may share one root, as for CUB-200).
Ids follow makd.formats.image_ids, relative to the split's root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from makd.data.image_index import DATASET_TYPES, ImageIndex
from makd.errors import ConfigError
from makd.formats.errors import DatasetFormatError, DatasetMissingError
from makd.formats.image_ids import image_id, is_image_file, list_image_files
from makd.formats.split_files import read_split_file

# `<class name>_<label>_<running index>`: the class name may itself hold "_" (American_Pit_Bull_Terrier_1_12).
RELEASE_NAME = re.compile(r"^(?P<name>.+)_(?P<label>\d+)_(?P<index>\d+)$")
RELEASE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass
class _Files:
    """The image files of one split: ids relative to `root`, in id order."""

    root: str
    ids: list[str]
    paths: list[str]


def _root(cfg, key: str, layout: str) -> str:
    value = cfg.DATASET[key]
    if not value:
        raise ConfigError(f"DATASET.{key} is empty; set it to the image folder (DATASET.TYPE {layout})")
    if not os.path.isdir(value):
        raise DatasetMissingError(f"DATASET.{key} {value} is not a folder; check the path (DATASET.TYPE {layout})")
    return value


def _list(root: str) -> _Files:
    files = list_image_files(root)  # DatasetFormatError when two files share an id
    if not files:
        raise DatasetMissingError(f"no images under {root} (.png, .jpg, ... files); check the image folder")
    return _Files(root, [image_id(f, root) for f in files], [str(f) for f in files])


def _select(files: _Files, positions: list[int]) -> _Files:
    return _Files(files.root, [files.ids[p] for p in positions], [files.paths[p] for p in positions])


def list_split_files(cfg, layout: str) -> tuple[_Files, _Files]:
    """(train, test) files after applying the split files; train and test never share an image."""
    train_root = _root(cfg, "TRAIN_IMAGE_PATH", layout)
    if cfg.DATASET.TEST_IMAGE_PATH:
        test_root = _root(cfg, "TEST_IMAGE_PATH", layout)
    elif cfg.DATASET.TEST_SPLIT_FILE:
        test_root = train_root  # one root, two split files (CUB-200, Mini-ImageNet)
    else:
        raise ConfigError(
            f"DATASET.TEST_IMAGE_PATH is empty; set it to the test image folder (DATASET.TYPE {layout}) "
            "or give DATASET.TEST_SPLIT_FILE"
        )
    same_root = os.path.realpath(train_root) == os.path.realpath(test_root)
    train_all = _list(train_root)
    test_all = train_all if same_root else _list(test_root)
    test = test_all
    if cfg.DATASET.TEST_SPLIT_FILE:
        test = _select(
            test_all, read_split_file(cfg.DATASET.TEST_SPLIT_FILE, "DATASET.TEST_SPLIT_FILE", test_all.ids, test_root)
        )
    if cfg.DATASET.TRAIN_SPLIT_FILE:
        positions = read_split_file(cfg.DATASET.TRAIN_SPLIT_FILE, "DATASET.TRAIN_SPLIT_FILE", train_all.ids, train_root)
        train = _select(train_all, positions)
    elif same_root:  # only a test list: train on the rest of the root
        held = set(test.ids)
        train = _select(train_all, [p for p, i in enumerate(train_all.ids) if i not in held])
    else:
        train = train_all
    if same_root:
        shared = sorted(set(train.ids) & set(test.ids))
        if shared:
            raise ConfigError(
                f"{len(shared)} images are in both the train and the test split of {train_root} "
                f"(first: {', '.join(shared[:3])}); fix DATASET.TRAIN_SPLIT_FILE / TEST_SPLIT_FILE"
            )
    if not train.ids:
        raise ConfigError(f"the training split of {train_root} is empty; check DATASET.TRAIN_SPLIT_FILE")
    return train, test


@DATASET_TYPES.register("image_folder", "demo")
def build_image_folder(cfg) -> tuple[ImageIndex, ImageIndex]:
    """Class folders: label = sorted position of the image's top folder among the training classes."""
    train, test = list_split_files(cfg, "image_folder")
    for files in (train, test):
        loose = [i for i in files.ids if "/" not in i]
        if loose:
            raise ConfigError(
                f"{files.root}: image {loose[0]!r} is not inside a class folder; DATASET.TYPE image_folder expects "
                "root/<class>/<image> (use release_png for flat <class>_<label>_<idx>.png folders)"
            )
    class_names = sorted({i.split("/", 1)[0] for i in train.ids})
    label_of = {name: label for label, name in enumerate(class_names)}
    unseen = sorted({i.split("/", 1)[0] for i in test.ids} - set(label_of))
    if unseen:
        raise ConfigError(
            f"test classes {', '.join(unseen[:3])} of {test.root} have no training images in {train.root}; "
            "train and test must share their class folders"
        )

    def index(files: _Files, split: str) -> ImageIndex:
        labels = [label_of[i.split("/", 1)[0]] for i in files.ids]
        return ImageIndex(files.ids, labels, class_names, f"image_folder {split} {files.root}", files.root, files.paths)

    return index(train, "train"), index(test, "test")


def parse_release_name(path: str | os.PathLike) -> tuple[str, int]:
    """(class name, label) of a release file `<class name>_<label>_<index>.<ext>`; DatasetFormatError otherwise."""
    match = RELEASE_NAME.match(Path(path).stem)
    if not match:
        raise DatasetFormatError(f"{path}: name is not <class>_<label>_<index> (the release layout)")
    return match["name"], int(match["label"])


@DATASET_TYPES.register("release_png")
def build_release(cfg) -> tuple[ImageIndex, ImageIndex]:
    """The official flat folders: label = second-to-last "_" field of the file name."""
    train, test = list_split_files(cfg, "release_png")
    name_of: dict[int, tuple[str, str]] = {}  # label -> (class name, first file that said so)
    labels: dict[str, list[int]] = {}
    for split, files in (("train", train), ("test", test)):
        labels[split] = []
        for path in files.paths:
            try:
                name, label = parse_release_name(path)
            except ValueError as err:
                raise ConfigError(f"{err}; use DATASET.TYPE image_folder for class folders") from None
            known = name_of.setdefault(label, (name, path))
            if known[0] != name:
                raise ConfigError(f"label {label} is {known[0]!r} in {known[1]} but {name!r} in {path}; fix one name")
            labels[split].append(label)
    num_classes = max(name_of) + 1
    missing = [label for label in range(num_classes) if label not in name_of]
    if missing:
        raise ConfigError(
            f"labels {missing[:5]} appear in no file name under {train.root} or {test.root}; "
            f"release labels must run 0..{num_classes - 1}"
        )
    class_names = [name_of[label][0] for label in range(num_classes)]
    return (
        ImageIndex(train.ids, labels["train"], class_names, f"release_png train {train.root}", train.root, train.paths),
        ImageIndex(test.ids, labels["test"], class_names, f"release_png test {test.root}", test.root, test.paths),
    )


def detect_layout(root: str) -> str:
    """ "release_png" when every image directly in `root` is a PNG/JPG named <x>_<int>_<int>, "image_folder"
    when `root` holds class folders (and no loose images); otherwise a ConfigError saying why."""

    def fail(reason: str) -> ConfigError:
        return ConfigError(
            f"DATASET.TYPE auto cannot tell the layout of {root}: {reason}; set DATASET.TYPE image_folder "
            "(root/<class>/<image>) or release_png (flat <class>_<label>_<idx>.png)"
        )

    if not os.path.isdir(root):
        raise DatasetMissingError(f"DATASET.TRAIN_IMAGE_PATH {root} is not a folder; check the path")
    entries = [e for e in os.scandir(root) if not e.name.startswith(".")]
    folders = [e.name for e in entries if e.is_dir()]
    images = sorted(e.name for e in entries if e.is_file() and is_image_file(e.name))
    if folders and images:
        raise fail(f"it holds both folders ({folders[0]}) and loose images ({images[0]})")
    if folders:
        return "image_folder"
    if not images:
        raise fail("it holds no images")
    for name in images:
        if Path(name).suffix.lower() not in RELEASE_EXTENSIONS or not RELEASE_NAME.match(Path(name).stem):
            raise fail(f"{name!r} is not a PNG/JPG named <class>_<label>_<index>")
    return "release_png"


# "fine_grained" and "custom": folder-type names of MaKD-style configs, so such files load unchanged.
@DATASET_TYPES.register("auto", "fine_grained", "custom")
def build_auto(cfg) -> tuple[ImageIndex, ImageIndex]:
    if not cfg.DATASET.TRAIN_IMAGE_PATH:
        raise ConfigError("DATASET.TRAIN_IMAGE_PATH is empty; set it to the training image folder")
    return DATASET_TYPES.get(detect_layout(cfg.DATASET.TRAIN_IMAGE_PATH))(cfg)


# DATASET.TYPE values of the official configs and of the MaKD release (its fine-grained sets, mdistiller's
# cifar100 / imagenet / tiny_imagenet) in their usual spellings. With DATASET.TRAIN_IMAGE_PATH set they name
# image folders, read by the "auto" layout: the release's flat <class>_<label>_<idx>.png folders -> release_png,
# class folders -> image_folder. Without a path, the names torchvision also knows stay its datasets (ROOT).
OFFICIAL_DATASET_TYPES = (
    "oxfordpets",
    "oxford_pets",
    "caltech101",
    "cub200",
    "cub",
    "cub_200_2011",
    "flowers",
    "flowers102",
    "dtd",
    "stanfordcars",
    "stanford_cars",
    "cars",
    "aircraft",
    "fgvc_aircraft",
    "fgvcaircraft",
    "miniimagenet",
    "mini_imagenet",
    "cifar100",
    "imagenet",
    "tiny_imagenet",
    "tinyimagenet",
)


def layout_type(cfg) -> str:
    """The DATASET_TYPES entry that reads `cfg`'s data: "auto" for an official dataset name given image folders."""
    kind = cfg.DATASET.TYPE
    if kind.lower() in OFFICIAL_DATASET_TYPES and cfg.DATASET.TRAIN_IMAGE_PATH:
        return "auto"
    return kind


# Official names torchvision has no class for: they only ever mean image folders.
@DATASET_TYPES.register("oxfordpets", "cub200", "cub", "cub_200_2011", "miniimagenet", "mini_imagenet", "imagenet")
@DATASET_TYPES.register("tiny_imagenet", "tinyimagenet")
def build_official_folders(cfg) -> tuple[ImageIndex, ImageIndex]:
    raise ConfigError(
        f"DATASET.TYPE {cfg.DATASET.TYPE} reads image folders: set DATASET.TRAIN_IMAGE_PATH and TEST_IMAGE_PATH "
        "(the release's flat <class>_<label>_<idx>.png folders, or root/<class>/<image>)"
    )
