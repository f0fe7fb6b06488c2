"""Where stage 1 gets the class names (and the image count M of the paper's prompt).

Two sources: a text file with one class per line, or a training config (YAML) whose dataset
the trainer can index; then the names and M come from the training split through
makd.data.build_image_indexes, the trainer's own reader, so both stages agree on the classes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from makd.errors import MakdError
from makd.formats.conversion import class_key
from makd.formats.text_lists import read_text_list

CONFIG_SUFFIXES = (".yaml", ".yml")
_NUMBER_PREFIX = re.compile(r"^\d+\.(?=[A-Za-z])")  # "001.Black_footed_Albatross" (CUB-style folder names)


class ClassSourceError(MakdError, ValueError):
    """The class list could not be read."""


@dataclass(frozen=True)
class ClassList:
    """Class names in label order, the number of training images (None when unknown) and the source."""

    names: list[str]
    num_images: int | None
    source: str


def display_name(folder_name: str) -> str:
    """A folder-derived class name as a reader would write it: numeric prefix dropped, "_" -> " "."""
    name = _NUMBER_PREFIX.sub("", folder_name).replace("_", " ").strip()
    return " ".join(name.split()) or folder_name


def read_class_file(path: str | os.PathLike) -> ClassList:
    """One class per line, used as written, read as every text list is (makd.formats.text_lists: a BOM and CRLF
    removed with a warning, blank lines and lines starting with '#' skipped); two lines naming one class by the
    rule per-class files are matched with (makd.formats.conversion.class_key: case, '_' and spacing aside) are an
    error naming both lines."""
    path = Path(path)
    listed = read_text_list(path, "class list", entry="class", same=class_key, comments=True, error=ClassSourceError)
    names = listed.entries
    if len(names) < 2:
        raise ClassSourceError(f"{path}: holds {len(names)} class names; write one class per line (at least 2)")
    return ClassList(names, None, str(path))


def read_class_config(path: str | os.PathLike) -> ClassList:
    """Class names and M from the training split of the dataset a trainer config describes."""
    from makd.config import load_cfg
    from makd.data.layouts import build_image_indexes  # imported late: pulls in torchvision

    try:
        cfg = load_cfg(str(path), check=False)
        train, _ = build_image_indexes(cfg)
    except (ValueError, OSError) as err:  # ConfigError, DatasetMissingError, unreadable files
        raise ClassSourceError(f"{path}: cannot index the training images ({err})") from None
    file_backed = cfg.DATASET.TYPE.lower() in ("auto", "image_folder", "release_png", "demo")
    names = [display_name(n) for n in train.class_names] if file_backed else list(train.class_names)
    if len(set(n.lower() for n in names)) != len(names):
        names = list(train.class_names)  # tidying made two names equal: keep the originals
    return ClassList(names, len(train), f"{path} (DATASET.TYPE {cfg.DATASET.TYPE}, {train.source})")


def read_classes(source: str | os.PathLike) -> ClassList:
    """A ClassList from a class-list text file or a trainer config (*.yaml / *.yml)."""
    path = Path(source)
    if not path.is_file():
        raise ClassSourceError(
            f"--classes {source} does not exist; give a text file with one class per line or a training config (.yaml)"
        )
    if path.suffix.lower() in CONFIG_SUFFIXES:
        return read_class_config(path)
    return read_class_file(path)
