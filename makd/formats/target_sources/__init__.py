"""Target sources: one class per kind of teacher-target file, recognised from the file's keys and value shape.

Kinds (one module each): `per_image` ({image_id: [p_1..p_Q]}, stage 2), `per_class` ({class: [p_1..p_Q]}, stage 2
`--level class`, LaViD's `*_text.json`) and `multiple_choice` ({class: [[p_q1..p_qM], ...]}, LaViD's
`*_chat_50-5.json`). The contract is in `base`; `open_source` reads a file once and returns the source of its kind.
Every module of this package is imported here, so each kind registers itself in SOURCE_KINDS: adding a kind is one
new module (a registered TargetSource subclass with its recognition_order) plus its tests. `mixed` assembles
sources by question (DATASET.ASPECT_SOURCES); it is no kind of file.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Sequence

from makd.formats.target_sources.base import SOURCE_KINDS, TargetFile, TargetSource

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

_KINDS = sorted(dict.fromkeys(SOURCE_KINDS.get(name) for name in SOURCE_KINDS), key=lambda k: k.recognition_order)
# Recognition order: the most specific first; the last kind of a caller's list is its fallback (never asked).
ANY_KIND = tuple(k.kind for k in _KINDS)  # ("multiple_choice", "per_class", "per_image")
CLASS_KINDS = tuple(k.kind for k in _KINDS if k.row_unit == "class")  # ("multiple_choice", "per_class")


def open_source(
    path: str | os.PathLike,
    *,
    key: str,
    class_names: Sequence[str] = (),
    kinds: Sequence[str] = ANY_KIND,
    class_map: dict[str, str] | None = None,
    class_map_key: str = "",
) -> TargetSource:
    """The source of `path` (named by config key `key`), of the first kind of `kinds` that recognises it.

    `class_names` (the dataset's, label order) are what a per-class file's keys are recognised by; `class_map`
    ({dataset class: file class}) pairs names the class_key rule does not, and `class_map_key` names it in errors.
    The file is read once; with "per_image" among `kinds` it is read as this project's aspect file first.
    """
    classes = [SOURCE_KINDS.get(kind) for kind in kinds]
    file = TargetFile.read(path, strict="per_image" in kinds)
    names = list(class_names)
    for kind in classes[:-1]:
        if kind.recognises(file, names, class_map):
            return kind.open(file, key, class_map, class_map_key)
    return classes[-1].open(file, key, class_map, class_map_key)


__all__ = ["ANY_KIND", "CLASS_KINDS", "SOURCE_KINDS", "TargetFile", "TargetSource", "open_source"]
