"""Stage 2 per box: every ground-truth box of a COCO-format set as one item, shown as a crop or on the whole image.

The reviewers of the paper asked whether the MLLM sees the box crop or the whole image; `--boxes-view` answers
it with one switch:
  - crop (default): the box widened by `margin` x its width (left and right) and height (top and bottom), cut
    out of the image at whole pixels; the question is asked as it is, so a crop scores exactly as the same crop
    saved as an image file would at image level;
  - whole: the whole image with the box outlined in red (drawn on a copy, just outside the box so no object
    pixel is covered) and the question framed by a prompt template that points at the red box.
Boxes whose shorter side is under `min_size` pixels are skipped in both views (so the two files have the same
rows) and listed in the sidecar; crowd regions are not scored (torchvision's references do not train on them).
Rows are keyed by the one box-id rule, `makd.formats.coco.box_id`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from makd.formats.coco import BOX_ID_SEPARATOR, box_id, read_coco
from makd.formats.files import sha256_file
from makd.mllm.errors import ExtractionError
from makd.mllm.items import Item

BOX_VIEWS = ("crop", "whole")
DEFAULT_MARGIN = 0.1  # the paper does not say; a little context around the object
DEFAULT_MIN_SIZE = 8  # px; an 8x8 crop is upsampled 56x to InternVL's 448-px tile
QUESTION_FIELD = "{question}"
DEFAULT_PROMPTS = {
    "crop": QUESTION_FIELD,
    "whole": f"Answer about the object inside the red box only. {QUESTION_FIELD}",
}
MARK_COLOUR = (255, 0, 0)
BOX_ID_RULE = f"<COCO image id>{BOX_ID_SEPARATOR}<COCO annotation id> (makd.formats.coco.box_id)"


def crop_region(
    box: tuple[float, float, float, float], margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """The whole-pixel region (left, top, right, bottom; right/bottom exclusive) cropped for `box` (x1, y1, x2, y2):
    widened by `margin` x the box's width on the left and right and x its height on top and bottom, rounded
    outwards, clipped to the image."""
    x1, y1, x2, y2 = box
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    left, top = max(0, math.floor(x1 - dx)), max(0, math.floor(y1 - dy))
    right, bottom = min(width, math.ceil(x2 + dx)), min(height, math.ceil(y2 + dy))
    return left, top, right, bottom


def mark_line_width(width: int, height: int) -> int:
    """Outline thickness: 2 px, or 1/150 of the longer side (visible after InternVL scales to 448-px tiles)."""
    return max(2, round(max(width, height) / 150))


def mark_box(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """A copy of `image` with `box` outlined in MARK_COLOUR, the outline just outside the box's pixels."""
    marked = image.copy()
    line = mark_line_width(*image.size)
    x1, y1, x2, y2 = math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3])
    # PIL draws `width` pixels inwards from the (inclusive) corners, so the corners sit `line` px outside the box.
    ImageDraw.Draw(marked).rectangle(
        (x1 - line, y1 - line, x2 - 1 + line, y2 - 1 + line), outline=MARK_COLOUR, width=line
    )
    return marked


class CocoBoxItems:
    """Every non-crowd ground-truth box of a COCO instances file at least `min_size` px on its shorter side."""

    noun, nouns = "box", "boxes"

    def __init__(
        self,
        instances: str | os.PathLike,
        images_dir: str | os.PathLike,
        view: str = "crop",
        margin: float = DEFAULT_MARGIN,
        min_size: float = DEFAULT_MIN_SIZE,
        prompt: str | None = None,
    ) -> None:
        if view not in BOX_VIEWS:
            raise ExtractionError(f"--boxes-view {view!r}: unknown view (use {' or '.join(BOX_VIEWS)})")
        if not (math.isfinite(margin) and margin >= 0):
            raise ExtractionError(f"--box-margin {margin}: must be >= 0 (a fraction of the box's width and height)")
        if not (math.isfinite(min_size) and min_size >= 0):
            raise ExtractionError(f"--min-box-size {min_size}: must be >= 0 pixels")
        prompt = DEFAULT_PROMPTS[view] if prompt is None else prompt
        if prompt.count(QUESTION_FIELD) != 1:
            raise ExtractionError(f"--box-prompt {prompt!r}: must hold {QUESTION_FIELD} exactly once")
        self.instances, self.view, self.margin, self.min_size, self.prompt = (
            Path(instances),
            view,
            margin,
            min_size,
            prompt,
        )
        self.coco = read_coco(instances, images_dir)
        self.items: list[Item] = []
        self.boxes: dict[str, tuple[int, tuple[float, float, float, float]]] = {}  # box id -> (image id, xyxy)
        self.small: list[dict] = []
        for image in self.coco.images:
            for box in self.coco.boxes_of(image.id):
                key = box_id(image.id, box.annotation_id)
                width, height = box.box[2] - box.box[0], box.box[3] - box.box[1]
                if min(width, height) < min_size:
                    self.small.append({"id": key, "width": round(width, 3), "height": round(height, 3)})
                    continue
                self.items.append(Item(key, self.coco.path_of(image.id)))
                self.boxes[key] = (image.id, box.box)
        if not self.items:
            raise ExtractionError(
                f"--boxes {instances}: none of its {len(self.small)} boxes is at least {min_size:g} px on its "
                "shorter side; lower --min-box-size"
            )
        self.num_crowd = sum(len(self.coco.crowd_boxes_of(image.id)) for image in self.coco.images)
        self.instances_sha256 = sha256_file(self.instances)

    def read(self, item: Item) -> Image.Image:
        image_id, box = self.boxes[item.id]
        image = self.coco.read_image(image_id)  # the one decoder; a size other than the JSON's is an error
        if self.view == "whole":
            return mark_box(image, box)
        return image.crop(crop_region(box, self.margin, image.width, image.height))

    def prompts(self, questions: Sequence[str]) -> list[str]:
        return [self.prompt.replace(QUESTION_FIELD, q) for q in questions]

    def settings(self) -> dict:
        boxes = {
            "instances_sha256": self.instances_sha256,
            "view": self.view,
            "margin": self.margin,
            "min_box_size": self.min_size,
            "prompt": self.prompt,
        }
        if self.view == "whole":
            boxes["mark"] = {"colour": list(MARK_COLOUR), "line_width": "max(2, round(longer side / 150)) px"}
        return {"image_root": str(Path(self.coco.images_dir).resolve()), "boxes": boxes}

    def sidecar(self) -> dict:
        settings = self.settings()
        return {
            "item": "box",
            "image_root": settings["image_root"],
            "box_id_rule": BOX_ID_RULE,
            "boxes": {
                "instances": str(self.instances),
                **settings["boxes"],
                "num_images": len(self.coco.images),
                "num_boxes_in_file": len(self.items) + len(self.small),  # non-crowd
                "num_boxes_large_enough": len(self.items),  # what shards share out
                "num_crowd_boxes_not_scored": self.num_crowd,
                "small_boxes_skipped": self.small,
                "categories": [{"id": c.id, "label": c.label, "name": c.name} for c in self.coco.categories],
            },
        }
