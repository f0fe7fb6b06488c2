"""The images of a folder, or of a training config's split, with their class names: what `aspects convert`
matches the keys of another project's aspect file to (makd.formats.conversion)."""

from __future__ import annotations

import os

from makd.data.layouts.folders import detect_layout, parse_release_name
from makd.formats.conversion import FolderImages
from makd.formats.errors import ArtifactError
from makd.formats.image_ids import image_id, list_image_files


def folder_images(root: str | os.PathLike) -> FolderImages:
    """The images of `root` with their ids and class names (class folders or the flat release layout)."""
    root = str(root)
    try:
        files = list_image_files(root)
    except (FileNotFoundError, ValueError) as err:
        raise ArtifactError(f"--images: {err}") from None
    if not files:
        raise ArtifactError(f"--images {root} holds no images (.png, .jpg, ...)")
    layout = detect_layout(root)
    ids = [image_id(f, root) for f in files]
    if layout == "release_png":
        classes = [parse_release_name(f)[0] for f in files]
    else:
        classes = [i.split("/", 1)[0] for i in ids]
    return FolderImages(root, ids, classes, layout)


def config_images(config: str | os.PathLike, split: str = "train") -> FolderImages:
    """The images of a training config's split, as stage 3 lists them (any DATASET.TYPE: class folders,
    release PNGs, split files, torchvision datasets): ids and class names from makd.data."""
    from makd.config import load_cfg
    from makd.data.layouts import build_image_indexes  # imported late: pulls in torchvision

    cfg = load_cfg(str(config), check=False)
    train, test = build_image_indexes(cfg)
    index = train if split == "train" else test
    classes = [index.class_names[label] for label in index.labels]
    return FolderImages(index.root or index.source, list(index.ids), classes, f"config {config} ({index.source})")
