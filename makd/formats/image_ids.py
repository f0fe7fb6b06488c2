"""The one image-id rule shared by stage 2 (aspect extraction) and stage 3 (training).

An image's id is its path relative to the image root, with POSIX separators and without the
file extension. A flat folder therefore gives the bare stem, as in the released aspect files.
"""

from __future__ import annotations

import os
from pathlib import Path

from makd.formats.errors import DatasetFormatError, DatasetMissingError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def image_id(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """Id of `path` under `root`: relative POSIX path without extension (e.g. "cat/img_001")."""
    relative = Path(os.path.relpath(Path(path), Path(root)))
    if relative.parts and relative.parts[0] == "..":
        raise DatasetFormatError(f"image {path} is not under the image root {root}")
    return relative.with_suffix("").as_posix()


def list_image_files(root: str | os.PathLike) -> list[Path]:
    """All image files under `root` (recursive, hidden entries skipped), sorted by image id.

    Raises DatasetMissingError (a FileNotFoundError) when the folder is missing and DatasetFormatError
    (a ValueError) when two files share an id (e.g. `a.png` and `a.jpg`), since their aspect rows could
    not be told apart.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetMissingError(f"image folder {root} does not exist (check the path)")
    files = []

    def unreadable(err: OSError) -> None:  # os.walk would silently skip the folder and its images
        raise DatasetMissingError(f"cannot list the image folder {err.filename}: {err.strerror}; make it readable")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in filenames if not f.startswith(".") and is_image_file(f))
    by_id: dict[str, Path] = {}
    for f in files:
        key = image_id(f, root)
        if key in by_id:
            raise DatasetFormatError(f"two images share the id {key!r}: {by_id[key]} and {f}; rename one")
        by_id[key] = f
    return [by_id[k] for k in sorted(by_id)]
