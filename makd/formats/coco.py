"""Reading a COCO-format detection set (an images folder + an instances JSON), and the one box-id rule.

A box's id is `<image id>#<annotation id>` (COCO's integer ids): stage 2 keys its per-box aspect rows by
it and stage 3 looks the row of a ground-truth box up by it, so both go through `box_id` / `parse_box_id`.

Labels follow torchvision's detectors: the K COCO category ids, sorted, map to the contiguous labels
1..K and 0 is the background. Crowd annotations (`iscrowd: 1`) are kept apart (`crowd_boxes_of`):
torchvision's references drop them from training targets and COCO evaluation ignores detections on them.
Everything is checked when the file is read, so a bad set fails before any model is built, in one line.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from makd.atomic_files import atomic_write_json
from makd.formats.errors import DatasetFormatError, DatasetMissingError
from makd.formats.files import read_utf8_text, sha256_file
from makd.formats.image_decode import ImageLoadError, read_rgb
from makd.formats.strict_json import loads_json

BOX_ID_SEPARATOR = "#"

# COCO's own boxes reach up to a fraction of a pixel past the border (float rounding in the export),
# so a box may overhang by this much; it is then clipped to the image. Anything further is an error.
BOX_TOLERANCE_PX = 1.0

logger = logging.getLogger(__name__)


def box_id(image_id: int, annotation_id: int) -> str:
    """The id of annotation `annotation_id` of image `image_id`: "<image id>#<annotation id>", e.g. "139#2001"."""
    return f"{image_id}{BOX_ID_SEPARATOR}{annotation_id}"


def parse_box_id(value: str) -> tuple[int, int]:
    """(image id, annotation id) of a box id written by `box_id`; anything else is a DatasetFormatError."""
    image_part, sep, annotation_part = str(value).partition(BOX_ID_SEPARATOR)
    try:
        if not sep:
            raise ValueError
        return int(image_part), int(annotation_part)
    except ValueError:
        raise DatasetFormatError(
            f"box id {value!r} is not '<image id>{BOX_ID_SEPARATOR}<annotation id>' with integer COCO ids "
            f"(e.g. '139{BOX_ID_SEPARATOR}2001'); was the file written for image-level rows?"
        ) from None


def is_box_id(value: str) -> bool:
    """Whether `value` follows the box-id rule (for tools that read files keyed either way)."""
    try:
        parse_box_id(value)
    except DatasetFormatError:
        return False
    return True


@dataclass(frozen=True)
class CocoImage:
    """One image entry: COCO id, file name relative to the images folder, size in pixels."""

    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class CocoCategory:
    """One category: its COCO id, its contiguous label (1..K; 0 is the background) and its name."""

    id: int
    label: int
    name: str


@dataclass(frozen=True)
class CocoBox:
    """One annotation: `box` is (x1, y1, x2, y2) in pixels of the image, clipped to it; `label` is 1..K."""

    annotation_id: int
    box: tuple[float, float, float, float]
    label: int


@dataclass
class CocoSet:
    """A COCO-format detection set, validated. Images and categories are sorted by COCO id."""

    images: list[CocoImage]
    categories: list[CocoCategory]
    images_dir: str
    source: str  # the instances JSON
    _boxes: dict[int, list[CocoBox]] = field(default_factory=dict, repr=False)
    _crowd: dict[int, list[CocoBox]] = field(default_factory=dict, repr=False)
    _image_by_id: dict[int, CocoImage] = field(default_factory=dict, repr=False)
    # Box ids of zero-width or zero-height boxes, left out of every image's boxes (see read_coco).
    skipped_boxes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._image_by_id = {image.id: image for image in self.images}

    @property
    def num_classes(self) -> int:
        """K, the number of object categories (a torchvision detector has K + 1 outputs with the background)."""
        return len(self.categories)

    @property
    def label_names(self) -> list[str]:
        """Names indexed by label: ["__background__", name of label 1, ..., name of label K]."""
        return ["__background__"] + [c.name for c in self.categories]

    def image(self, image_id: int) -> CocoImage:
        try:
            return self._image_by_id[image_id]
        except KeyError:
            raise DatasetFormatError(f"{self.source}: no image with id {image_id!r}") from None

    def boxes_of(self, image_id: int) -> list[CocoBox]:
        """The non-crowd boxes of an image, by annotation id; [] for an image without boxes (a negative)."""
        self.image(image_id)
        return list(self._boxes.get(image_id, ()))

    def crowd_boxes_of(self, image_id: int) -> list[CocoBox]:
        """The crowd boxes (`iscrowd: 1`) of an image, by annotation id: regions to ignore, not training targets."""
        self.image(image_id)
        return list(self._crowd.get(image_id, ()))

    def subset(self, image_ids: Sequence[int]) -> CocoSet:
        """The same set restricted to `image_ids` (a validation carve): same categories, labels, folder and source;
        the images keep their order, their boxes and crowd regions."""
        keep = set(image_ids)
        return CocoSet(
            images=[image for image in self.images if image.id in keep],
            categories=list(self.categories),
            images_dir=self.images_dir,
            source=self.source,
            _boxes={i: list(b) for i, b in self._boxes.items() if i in keep},
            _crowd={i: list(b) for i, b in self._crowd.items() if i in keep},
            skipped_boxes=[b for b in self.skipped_boxes if parse_box_id(b)[0] in keep],
        )

    def box_ids(self) -> list[str]:
        """Ids of every non-crowd box, by image id then annotation id (the rows stage 2 writes)."""
        return [box_id(image.id, b.annotation_id) for image in self.images for b in self._boxes.get(image.id, ())]

    def path_of(self, image_id: int) -> Path:
        return Path(self.images_dir) / self.image(image_id).file_name

    def read_image(self, image_id: int) -> Image.Image:
        """The image as 8-bit RGB (the project's one decoder); a size other than the JSON's is an ImageLoadError,
        since the boxes would then not fall on the objects."""
        entry = self.image(image_id)
        path = self.path_of(image_id)
        image = read_rgb(path)
        if image.size != (entry.width, entry.height):
            raise ImageLoadError(
                f"image {path} is {image.size[0]}x{image.size[1]} but {self.source} says image id {image_id} is "
                f"{entry.width}x{entry.height}; its boxes would be misplaced (fix width/height or the file)"
            )
        return image


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages ("an array", not "a list")."""
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _entries(data: dict, key: str, source: str) -> list[dict]:
    if key not in data:
        raise DatasetFormatError(
            f"{source}: no {key!r} list; is it a COCO instances file (images, annotations, categories)?"
        )
    entries = data[key]
    if not isinstance(entries, list):
        raise DatasetFormatError(f"{source}: {key!r} is {_json_kind(entries)}, expected an array of objects")
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetFormatError(f"{source}: {key}[{number}] is {_json_kind(entry)}, expected an object")
    return entries


def _unique_ids(entries: list[dict], key: str, source: str) -> None:
    """Every entry has an integer "id" and no two share one (COCO tools would silently keep the last)."""
    seen: dict[int, int] = {}
    for number, entry in enumerate(entries):
        value = entry.get("id")
        if not _is_int(value):
            raise DatasetFormatError(f"{source}: {key}[{number}] has id {value!r}; COCO ids are integers")
        if value in seen:
            raise DatasetFormatError(
                f"{source}: {key}[{seen[value]}] and {key}[{number}] share the id {value}; give each its own id"
            )
        seen[value] = number


def _read_images(entries: list[dict], source: str) -> list[CocoImage]:
    _unique_ids(entries, "images", source)
    images, names = [], {}
    for number, entry in enumerate(entries):
        name, width, height = entry.get("file_name"), entry.get("width"), entry.get("height")
        where = f"{source}: images[{number}] (id {entry['id']})"
        if not isinstance(name, str) or not name:
            raise DatasetFormatError(f"{where} has file_name {name!r}; give the image's path under the images folder")
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            raise DatasetFormatError(
                f"{where} has width {width!r} and height {height!r}; both must be positive integers"
            )
        if name in names:
            raise DatasetFormatError(
                f"{where} repeats the file_name {name!r} of image id {names[name]}; one entry per file"
            )
        names[name] = entry["id"]
        images.append(CocoImage(entry["id"], name, width, height))
    return sorted(images, key=lambda image: image.id)


def _read_categories(entries: list[dict], source: str) -> list[CocoCategory]:
    if not entries:
        raise DatasetFormatError(f"{source}: 'categories' is empty; list every object category with its id and name")
    _unique_ids(entries, "categories", source)
    names: dict[str, int] = {}
    for number, entry in enumerate(entries):
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DatasetFormatError(f"{source}: categories[{number}] (id {entry['id']}) has name {name!r}; name it")
        if name in names:
            raise DatasetFormatError(
                f"{source}: categories {names[name]} and {entry['id']} are both named {name!r}; merge or rename them"
            )
        names[name] = entry["id"]
    ordered = sorted(entries, key=lambda entry: entry["id"])
    return [CocoCategory(entry["id"], label, entry["name"]) for label, entry in enumerate(ordered, start=1)]


def _xyxy(bbox: Any, image: CocoImage, where: str, tolerance: float) -> tuple[float, float, float, float] | None:
    """COCO's [x, y, width, height] as (x1, y1, x2, y2) clipped to the image, after checking it lies on it;
    None for a box of zero width or height (there or once clipped)."""
    if not (
        isinstance(bbox, list)
        and len(bbox) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    ):
        raise DatasetFormatError(f"{where} has bbox {bbox!r}; expected [x, y, width, height] of 4 finite numbers")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise DatasetFormatError(
            f"{where} has bbox {bbox!r} with a negative width or height; COCO boxes are [x, y, width, height]"
        )
    if w == 0 or h == 0:
        return None
    if x < -tolerance or y < -tolerance or x + w > image.width + tolerance or y + h > image.height + tolerance:
        raise DatasetFormatError(
            f"{where} has bbox {bbox!r} (x1 y1 x2 y2 = {x:g} {y:g} {x + w:g} {y + h:g}) outside its image "
            f"{image.file_name} of {image.width}x{image.height} (by more than {tolerance:g} px); "
            "fix the box, or the image's width/height"
        )
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, float(image.width)), min(y + h, float(image.height))
    if x2 <= x1 or y2 <= y1:  # a sliver inside the tolerance band, off the image
        return None
    return x1, y1, x2, y2


def _parse_json(text: str, source: str) -> dict:
    try:
        data = loads_json(text, source)  # a key written twice ("annotations") is an error, not a silent last-wins
    except json.JSONDecodeError as err:
        raise DatasetFormatError(
            f"{source}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); is the file complete?"
        ) from None
    if not isinstance(data, dict):
        raise DatasetFormatError(
            f"{source}: holds {_json_kind(data)}, expected an object with images, annotations and categories"
        )
    return data


def read_instances(instances_json: str | os.PathLike) -> dict:
    """The instances file as its JSON object, as it is (what pycocotools' COCO indexes); read_coco validates it."""
    if not Path(instances_json).is_file():
        raise DatasetMissingError(f"COCO instances file {instances_json} does not exist (check the path)")
    return _parse_json(read_utf8_text(instances_json, "COCO instances file"), str(instances_json))


def read_coco(
    instances_json: str | os.PathLike,
    images_dir: str | os.PathLike,
    *,
    check_files: bool = True,
    tolerance: float = BOX_TOLERANCE_PX,
) -> CocoSet:
    """Read and validate a COCO instances file whose `file_name`s are relative to `images_dir`.

    Errors (one line each, naming the entry and the fix): malformed JSON; a missing images / annotations /
    categories list; no annotations at all (an image without boxes is a valid negative, a file without
    any box is not); duplicate image, annotation or category ids; annotations of an unknown image or
    category; boxes that are not 4 numbers, of negative size, or outside the image by more than `tolerance`
    pixels; and (when `check_files`) image files missing from `images_dir`.
    """
    source = str(instances_json)
    data = read_instances(instances_json)
    images = _read_images(_entries(data, "images", source), source)
    categories = _read_categories(_entries(data, "categories", source), source)
    annotations = _entries(data, "annotations", source)
    if not images:
        raise DatasetFormatError(f"{source}: 'images' is empty; list the images the annotations belong to")
    if not annotations:
        raise DatasetFormatError(
            f"{source}: holds no annotations at all ({len(images)} images, 0 boxes); images without boxes are "
            "allowed as negatives, but a set needs some boxes (is it an image-info file, e.g. image_info_test?)"
        )
    _unique_ids(annotations, "annotations", source)

    image_by_id = {image.id: image for image in images}
    label_by_category = {category.id: category.label for category in categories}
    boxes: dict[int, list[CocoBox]] = {}
    crowd: dict[int, list[CocoBox]] = {}
    skipped: list[str] = []
    for number, entry in enumerate(annotations):
        where = f"{source}: annotations[{number}] (id {entry['id']})"
        image = image_by_id.get(entry.get("image_id")) if _is_int(entry.get("image_id")) else None
        if image is None:
            raise DatasetFormatError(
                f"{where} has image_id {entry.get('image_id')!r}, not an id in 'images'; add the image"
            )
        category = entry.get("category_id")
        if category not in label_by_category or not _is_int(category):
            known = sorted(label_by_category)
            shown = ", ".join(map(str, known[:10])) + (", ..." if len(known) > 10 else "")
            raise DatasetFormatError(
                f"{where} has category_id {category!r}, not an id in 'categories' ({shown}); "
                "add the category or fix the id"
            )
        is_crowd = entry.get("iscrowd", 0)
        if is_crowd not in (0, 1) or isinstance(is_crowd, float):
            raise DatasetFormatError(f"{where} has iscrowd {is_crowd!r}; expected 0 or 1")
        xyxy = _xyxy(entry.get("bbox"), image, where, tolerance)
        if xyxy is None:
            skipped.append(box_id(image.id, entry["id"]))
            continue
        box = CocoBox(entry["id"], xyxy, label_by_category[category])
        (crowd if is_crowd else boxes).setdefault(image.id, []).append(box)
    if skipped:
        # Real exports hold a few (COCO train2017 has boxes of width or height 0); a detector's box regression
        # cannot take them, and torchvision's references drop them too.
        logger.warning(
            "%s: left out %d boxes of zero width or height (first: %s)", source, len(skipped), ", ".join(skipped[:3])
        )
    usable = sum(len(rows) for rows in boxes.values())
    if not usable:
        # Crowd regions are ignored by training and evaluation, degenerate boxes are left out: a set of only those
        # would train a detector on nothing (and score it on nothing) while every step looks normal.
        num_crowd = sum(len(rows) for rows in crowd.values())
        raise DatasetFormatError(
            f"{source}: no usable box: of its {len(annotations)} annotations {num_crowd} are crowd regions "
            f"(iscrowd 1, never training targets) and {len(skipped)} have zero width or height; a detection set "
            "needs boxes with iscrowd 0 and a positive size"
        )
    for table in (boxes, crowd):
        for rows in table.values():
            rows.sort(key=lambda b: b.annotation_id)

    if check_files:
        images_root = Path(images_dir)
        if not images_root.is_dir():
            raise DatasetMissingError(f"images folder {images_root} of {source} does not exist (check the path)")
        missing = [image.file_name for image in images if not (images_root / image.file_name).is_file()]
        if missing:
            raise DatasetMissingError(
                f"{len(missing)} of {len(images)} images of {source} are missing from {images_root} "
                f"(first: {missing[0]}); copy them there or point to the right images folder"
            )
    return CocoSet(images, categories, str(images_dir), source, _boxes=boxes, _crowd=crowd, skipped_boxes=skipped)


def check_same_categories(train: CocoSet, test: CocoSet, train_key: str, test_key: str) -> None:
    """One DatasetFormatError line unless both sets list the same categories, by id and by name: the contiguous labels
    1..K follow the ids, so another id set shifts every label, and the same ids under other names (two exports that
    numbered their categories alike) would score a detector of one category set on another's boxes."""
    train_categories = {c.id: c.name for c in train.categories}
    test_categories = {c.id: c.name for c in test.categories}
    only_train = sorted(set(train_categories) - set(test_categories))
    only_test = sorted(set(test_categories) - set(train_categories))
    if only_train or only_test:
        listed = "; ".join(
            f"ids only in {key} ({path}): {', '.join(f'{i} {names[i]!r}' for i in ids[:5])}"
            + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            for key, path, names, ids in (
                (train_key, train.source, train_categories, only_train),
                (test_key, test.source, test_categories, only_test),
            )
            if ids
        )
        raise DatasetFormatError(
            f"{test_key} and {train_key} list different category ids ({listed}); give both the same 'categories' list"
        )
    renamed = [i for i in sorted(train_categories) if train_categories[i] != test_categories[i]]
    if renamed:
        first = renamed[0]
        raise DatasetFormatError(
            f"{test_key} and {train_key} give {len(renamed)} category id(s) different names (first: id {first} is "
            f"{train_categories[first]!r} in {train.source} but {test_categories[first]!r} in {test.source}); the "
            "labels would mean other objects at test time: give both files the same 'categories' list"
        )


def box_rows_source_problem(
    aspect_path: str | os.PathLike, sidecar: Mapping[str, Any] | None, instances_json: str | os.PathLike, key: str,
    instances_key: str,
) -> str | None:  # fmt: skip
    """Whether a per-box aspect file was made from `instances_json`, by the sha256 its sidecar records (stage 2
    --boxes writes it): a DatasetFormatError line when it was made from another file, since COCO ids restart in
    every export and colliding box ids would silently join rows to other boxes; a warning line when the file has no
    such record (nothing can be checked); None when it matches or the file is not per box."""
    if sidecar is None:
        return (
            f"{key} {aspect_path} has no sidecar ({Path(str(aspect_path) + '.meta.json').name}), so nothing records "
            f"which instances file its box ids come from; make sure it is the stage-2 output for {instances_json}"
        )
    if sidecar.get("item") != "box":
        return None
    boxes = sidecar.get("boxes") if isinstance(sidecar.get("boxes"), Mapping) else {}
    recorded = boxes.get("instances_sha256")
    if not recorded:
        return f"{key} {aspect_path}: its sidecar records no instances_sha256; its box ids cannot be checked"
    actual = sha256_file(instances_json)
    if recorded != actual:
        raise DatasetFormatError(
            f"{key} {aspect_path} was made from another instances file ({boxes.get('instances', '?')}, sha256 "
            f"{str(recorded)[:12]}) than {instances_key} {instances_json} (sha256 {actual[:12]}); its box ids "
            f"('<image id>#<annotation id>') would join rows to other boxes: run stage 2 --boxes on {instances_json}, "
            f"or point {instances_key} at the file the rows were made from"
        )
    return None


def write_instances(path: str | os.PathLike, instances: Mapping[str, Any]) -> None:
    """Write a COCO instances object (images, annotations, categories) as JSON, atomically."""
    atomic_write_json(path, instances)
