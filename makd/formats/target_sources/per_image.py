"""Per-image target files: this project's `{image_id: [p_1..p_Q]}` (stage 2's output, the released format).

Rows are matched to an index by image id (makd.formats.image_ids). The fallback kind: a file that is no other
kind is read as this one, with makd.formats.aspect_files' messages (duplicate ids, values outside [0, 1], ...).
"""

from __future__ import annotations

import numpy as np

from makd.errors import ConfigError
from makd.formats.aspect_files import AspectTable
from makd.formats.errors import ArtifactError
from makd.formats.target_sources.base import SOURCE_KINDS, ImageRows, TargetFile, TargetSource

MISSING_POLICIES = ("error", "drop", "nan")

# What fixes missing rows, per role: DATASET.MISSING_ASPECTS governs training images only; test rows
# come from DATASET.TEST_ASPECT_JSON alone, and validation images are training images.
_MISSING_ROW_FIX = {
    "training": "run stage 2 on them or set DATASET.MISSING_ASPECTS drop",
    "validation": "run stage 2 on the training images (validation images are carved from them)",
    "test": (
        "run stage 2 on the test images (DATASET.TEST_IMAGE_PATH) and point DATASET.TEST_ASPECT_JSON at its output, "
        "or set DATASET.TEST_ASPECT_JSON '' to evaluate without the aspect metrics"
    ),
}


class MissingRowsError(ArtifactError):
    """Images of an index have no row in a per-image file; `positions` are theirs in the index, in order (the data
    loader checks whether those files are images at all: a text file named .png is not a missing row)."""

    def __init__(self, message: str, positions: list[int]) -> None:
        super().__init__(message)
        self.positions = positions


def join_aspects(
    index: ImageRows, table: AspectTable, missing: str = "error", role: str = "training", class_map_key: str = ""
) -> tuple[ImageRows, np.ndarray]:
    """Rows of `table` in the order of `index`, matched by image id: (index, targets [N, Q] float32).

    `missing` says what happens to images without a row: "error" (MissingRowsError naming how many and
    the first ids), "drop" (they leave the returned index) or "nan" (they keep a NaN row, for splits
    whose aspect targets only feed metrics). `role` names the images in the error ("training"); `class_map_key`
    names the option that pairs class names, for a file that looks like one row per class.
    """
    if missing not in MISSING_POLICIES:
        raise ConfigError(
            f"DATASET.MISSING_ASPECTS {missing!r} is unknown; use one of {', '.join(MISSING_POLICIES[:2])}"
        )
    row_of = table.index()
    rows = [row_of.get(i) for i in index.ids]
    absent = [i for i, r in zip(index.ids, rows) if r is None]
    if absent and (missing == "error" or len(absent) == len(index)):
        hint = ""
        if len(absent) == len(index):  # nothing matched: almost always ids made from another root or layout
            hint = (
                f"; no id matches: the file's ids look like {', '.join(repr(i) for i in table.ids[:2])}, these "
                f"images' like {', '.join(repr(i) for i in index.ids[:2])} "
                f"(run stage 2 on {index.root or index.source})"
            )
            classes = list(index.class_names)
            if class_map_key and classes and len(table.ids) <= 2 * len(classes):
                # Far fewer rows than images, about one per class: a per-class file none of whose keys names a class
                # of this dataset (another naming, or another dataset's file) reads as per image.
                hint += (
                    f"; with {len(table.ids)} rows for {len(classes)} classes it looks like one row per class, but "
                    f"its keys name none of this dataset's classes (e.g. {table.ids[0]!r} vs {classes[0]!r}): pair "
                    f"them in {class_map_key}"
                )
        raise MissingRowsError(
            f"{len(absent)} {role} images have no row in {table.path} (first: {', '.join(absent[:3])}); "
            f"{_MISSING_ROW_FIX.get(role, _MISSING_ROW_FIX['training'])}{hint}",
            [p for p, r in enumerate(rows) if r is None],
        )
    if missing == "drop" and absent:
        keep = [p for p, r in enumerate(rows) if r is not None]
        index, rows = index.subset(keep), [rows[p] for p in keep]
    targets = np.full((len(rows), table.num_aspects), np.nan, dtype=np.float32)
    found = np.array([r is not None for r in rows], dtype=bool)
    if found.any():
        targets[found] = table.values[np.array([r for r in rows if r is not None], dtype=np.int64)]
    return index, targets


@SOURCE_KINDS.register("per_image")
class PerImageSource(TargetSource):
    """`{image_id: [p_1..p_Q]}`; `table` holds the validated rows."""

    kind = "per_image"
    recognition_order = 30  # the fallback: a file no other kind recognises is read as this project's own format

    def __init__(self, file: TargetFile, key: str, table: AspectTable, class_map_key: str = "") -> None:
        super().__init__(file, key)
        self.table = table
        self.class_map_key = class_map_key

    @classmethod
    def recognises(cls, file, class_names, class_map) -> bool:
        return file.strict and file.parses_strictly()

    @classmethod
    def open(cls, file, key, class_map=None, class_map_key=""):
        return cls(file, key, file.table(), class_map_key)

    @property
    def num_aspects(self) -> int:
        return self.table.num_aspects

    def join(self, index: ImageRows, missing: str = "error", role: str = "training") -> tuple[ImageRows, np.ndarray]:
        """join_aspects (a MissingRowsError when rows are missing)."""
        return join_aspects(index, self.table, missing, role, self.class_map_key)
