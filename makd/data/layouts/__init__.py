"""Dataset layouts: how DATASET.TYPE names the files (or the torchvision dataset) of a split, and the dispatch.

Each module of this package registers its builders `builder(cfg) -> (train, test)` in DATASET_TYPES
(makd.data.image_index) under the DATASET.TYPE names it reads: `folders` (class folders, the official flat-PNG
release, "auto" and the official dataset names given image folders), `torchvision_datasets` (the paper's datasets
on their official splits). Adding a layout is one new module here plus its tests; nothing else lists layouts.
"""

from __future__ import annotations

import importlib
import pkgutil

from makd.data.image_index import DATASET_TYPES, ImageIndex
from makd.data.layouts.folders import layout_type
from makd.errors import ConfigError


def import_layouts() -> None:
    """Import every module of this package, so each registers its layouts (at the first build: importing
    torchvision.datasets takes a while that reading a config does not need)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def build_image_indexes(cfg) -> tuple[ImageIndex, ImageIndex]:
    """(train, test) indexes of the dataset named by DATASET.TYPE (see docs/data.md for each layout)."""
    import_layouts()
    try:
        builder = DATASET_TYPES.get(layout_type(cfg))  # official names + image paths -> folders
    except KeyError as err:
        raise ConfigError(err.args[0]) from None
    return builder(cfg)
