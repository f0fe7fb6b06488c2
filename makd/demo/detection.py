"""The built-in detection demo: several demo shapes per image, COCO boxes, and a simulated per-box teacher.

Each image (image_size px square) has a background as in makd.demo.classification and 2 to `max_shapes` shapes,
each of a demo class (colour family x texture, from makd.demo.classification), any outline, size and rotation, placed
so that shapes overlap a little at most; later shapes are drawn over earlier ones. Every shape is a COCO box.

The simulated teacher answers the demo's 16 questions about each box as a crop would show it ("the main shape"
is the box's shape): colour and texture from its class; round / pointed from its outline; "background dark"
from the image's background; "a second, smaller shape" when the image holds another shape; "upper half" from the
box centre; "large" from its radius; "hidden behind a bar" when a later shape covers part of it. P(yes) is
makd.demo.classification.simulate_teacher's, so the noise and calibration settings mean the same as in the image demo.
Image-level rows (for DETECTION.ASPECT_LEVEL image) are the rows of each image's largest box.

Layout: train/<id>.png, test/<id>.png; instances_{train,test}.json (COCO; category ids 1..K in class-name order);
questions.txt; box_aspects_{split}.json {"<image id>#<annotation id>": [p..]}; image_aspects_{split}.json
{image id rule: "<file stem>": [p..]}; dataset.json. Deterministic per (seed, split, index), built in a temporary
folder and moved into place, as the image demo.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from makd.atomic_files import atomic_write_json

# The image demo's drawing primitives and teacher, reused (its module stays the one place they are defined).
from makd.demo.classification import (
    COLOUR_HUES,
    DARK_RAMP,
    DARK_THRESHOLD,
    OUTLINES,
    PIXEL_NOISE,
    SUPERSAMPLE,
    TEXTURES,
    UNRELIABLE_QUESTIONS,
    DemoArgumentError,
    DemoClass,
    _outline_points,
    _polygon_mask,
    _rgb,
    _texture,
    demo_questions,
    folder_built_aside,
    question_evidence,
    refuse_filled_folder,
    simulate_teacher,
)
from makd.formats.aspect_files import write_aspect_file
from makd.formats.coco import box_id, write_instances
from makd.formats.files import sha256_text
from makd.formats.questions import questions_text, write_questions

# 8 of the 16 demo classes: every colour family, plain or striped (stripes stay visible on a 10-px shape;
# dots and checks do not at the demo's 64 px).
DEFAULT_CLASSES = tuple(f"{colour}_{texture}" for colour in COLOUR_HUES for texture in ("plain", "striped"))
RADIUS_RANGE = (0.10, 0.17)  # shape radius as a fraction of the image side
LARGE_RADIUS = 0.135  # "large" = radius above this fraction (ramp +-0.01)
UPPER_RAMP = 0.04
MAX_OVERLAP = 0.15  # a new shape may cover at most this fraction of an earlier shape's area
OCCLUDED_FRACTION = 0.05  # a shape with more of its area covered by later shapes is "hidden"
FILE_NAMES = (
    "questions.txt",
    "instances_train.json",
    "instances_test.json",
    "box_aspects_train.json",
    "box_aspects_test.json",
    "image_aspects_train.json",
    "image_aspects_test.json",
)


def _classes(names: tuple[str, ...]) -> list[DemoClass]:
    out = []
    for name in names:
        colour, _, texture = name.partition("_")
        if colour not in COLOUR_HUES or texture not in TEXTURES:
            raise DemoArgumentError(f"detection demo class {name!r} is not a demo class (<colour>_<texture>)")
        out.append(DemoClass(colour, texture))
    return sorted(out, key=lambda c: c.name)


def render_scene(
    classes: list[DemoClass], size: int, max_shapes: int, rng: np.random.Generator
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One image and its shapes: [{"label": 0-based class index, "box": (x1, y1, x2, y2) px, "facts": {...}}]."""
    side = size * SUPERSAMPLE
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    bg_value = rng.uniform(0.1, 0.9)
    image = np.broadcast_to(_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.45), bg_value), (side, side, 3)).copy()
    gradient = rng.uniform(0, 2 * math.pi)
    image += rng.uniform(0.0, 0.25) * ((xs * math.cos(gradient) + ys * math.sin(gradient)) / side - 0.5)[..., None]

    shapes, masks = [], []
    for _ in range(int(rng.integers(2, max_shapes + 1))):
        label = int(rng.integers(len(classes)))
        radius = rng.uniform(*RADIUS_RANGE) * side
        outline = OUTLINES[rng.integers(len(OUTLINES))]
        angle = rng.uniform(0, 2 * math.pi)
        for _ in range(30):  # a placement that covers little of the earlier shapes; skipped if none is found
            cx, cy = rng.uniform(radius * 1.2, side - radius * 1.2, size=2)
            mask = _polygon_mask(side, _outline_points(outline, cx, cy, radius, angle))
            if all((mask * m).sum() <= MAX_OVERLAP * m.sum() for m in masks):
                break
        else:
            continue
        cls = classes[label]
        primary = _rgb(COLOUR_HUES[cls.colour] + rng.uniform(-20, 20), rng.uniform(0.5, 1.0), rng.uniform(0.55, 1.0))
        pattern = _texture(cls.texture, xs, ys, cx, cy, radius, rng.uniform(0, 2 * math.pi), rng)
        fill = primary * (1 - pattern) + primary * rng.uniform(0.3, 0.55) * pattern
        image = image * (1 - mask) + fill * mask
        rows, cols = np.nonzero(mask[..., 0] > 0.5)
        box = (cols.min() / SUPERSAMPLE, rows.min() / SUPERSAMPLE, (cols.max() + 1) / SUPERSAMPLE,
               (rows.max() + 1) / SUPERSAMPLE)  # fmt: skip
        shapes.append({"label": label, "box": box, "outline": outline, "radius": radius / side, "cy": cy / side})
        masks.append(mask)
    big = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    small = np.asarray(big.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
    small = small + rng.normal(0.0, PIXEL_NOISE, size=small.shape)
    out = Image.fromarray((np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")

    for k, shape in enumerate(shapes):
        covered = sum((masks[k] * m).sum() for m in masks[k + 1 :]) / masks[k].sum()
        shape["facts"] = {
            "round": 1.0 if shape["outline"] == "circle" else -1.0,
            "pointed": 1.0 if shape["outline"] in ("triangle", "star") else -1.0,
            "background_dark": float(np.clip((DARK_THRESHOLD - bg_value) / DARK_RAMP, -1, 1)),
            "distractor": 1.0 if len(shapes) > 1 else -1.0,
            "upper_half": float(np.clip((0.5 - shape["cy"]) / UPPER_RAMP, -1, 1)),
            "large": float(np.clip((shape["radius"] - LARGE_RADIUS) / 0.01, -1, 1)),
            "occluded": 1.0 if covered > OCCLUDED_FRACTION else -1.0,
        }
    return out, shapes


def _write_split(
    root: Path, split: int, name: str, count: int, classes, size: int, max_shapes: int, seed: int, teacher: dict
) -> tuple[dict, dict, dict]:
    """Render one split; returns (instances dict, box rows, image rows)."""
    root.mkdir(parents=True)
    questions = demo_questions()
    factors = np.array([teacher["unreliable_noise_factor"] if q in UNRELIABLE_QUESTIONS else 1.0 for q in questions])
    images, annotations, box_rows, image_rows = [], [], {}, {}
    for index in range(count):
        image_id = index + 1
        image, shapes = render_scene(classes, size, max_shapes, np.random.default_rng([seed, split, index, 0]))
        teacher_rng = np.random.default_rng([seed, split, index, 1])
        file_name = f"{name}_{index:05d}.png"
        image.save(root / file_name, format="PNG")
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        largest = None
        for shape in shapes:
            annotation_id = len(annotations) + 1
            x1, y1, x2, y2 = shape["box"]
            annotations.append(
                {
                    "id": annotation_id,
                    "image_id": image_id,
                    "category_id": shape["label"] + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
            evidence = question_evidence(classes[shape["label"]], shape["facts"])
            row = simulate_teacher(
                evidence,
                teacher_rng,
                noise=teacher["noise"],
                calibration=teacher["calibration"],
                noise_factors=factors,
            ).tolist()
            box_rows[box_id(image_id, annotation_id)] = row
            if largest is None or shape["radius"] > largest[0]:
                largest = (shape["radius"], row)
        image_rows[Path(file_name).stem] = largest[1]
    categories = [{"id": label + 1, "name": cls.name} for label, cls in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}, box_rows, image_rows


def generate_detection_demo(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    image_size: int = 64,
    num_train: int = 600,
    num_test: int = 150,
    max_shapes: int = 3,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    teacher_noise: float = 1.0,
    teacher_calibration: float = 1.0,
    unreliable_noise_factor: float = 3.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the detection demo to `out_dir` (see the module docstring) and return its summary (dataset.json)."""
    if not 32 <= image_size <= 256:
        raise DemoArgumentError(f"image_size {image_size} is outside 32..256 (the detection demo is designed for 64)")
    if num_train < 1 or num_test < 1 or not 2 <= max_shapes <= 6:
        raise DemoArgumentError(
            f"num_train {num_train} and num_test {num_test} must be >= 1 and max_shapes {max_shapes} in 2..6"
        )
    if teacher_noise < 0 or unreliable_noise_factor < 0 or teacher_calibration <= 0:
        raise DemoArgumentError("teacher_noise and unreliable_noise_factor must be >= 0, teacher_calibration > 0")
    start = time.perf_counter()
    out_dir = refuse_filled_folder(out_dir, overwrite, "detection demo folder", "--regenerate")
    demo_classes = _classes(tuple(classes))
    questions = demo_questions()
    teacher = {
        "noise": teacher_noise,
        "calibration": teacher_calibration,
        "unreliable_noise_factor": unreliable_noise_factor,
    }
    params = {
        "seed": seed,
        "image_size": image_size,
        "num_train": num_train,
        "num_test": num_test,
        "max_shapes": max_shapes,
        "classes": [c.name for c in demo_classes],
        "teacher_noise": teacher_noise,
        "teacher_calibration": teacher_calibration,
        "unreliable_noise_factor": unreliable_noise_factor,
    }
    fixed = {"date": "generated (deterministic; no date recorded)", "generator": "makd.demo.detection", **params}
    teacher_meta = {
        "teacher": "simulated per box (makd.demo.detection, makd.demo.classification.simulate_teacher), not an MLLM",
        "questions": questions,
        "questions_sha256": sha256_text(questions_text(questions)),
    }
    with folder_built_aside(out_dir) as work:
        counts = {}
        for split, (name, count) in enumerate((("train", num_train), ("test", num_test))):
            instances, box_rows, image_rows = _write_split(
                work / name, split, name, count, demo_classes, image_size, max_shapes, seed, teacher
            )
            write_instances(work / f"instances_{name}.json", instances)
            meta = {**fixed, **teacher_meta, "split": name, "instances": f"instances_{name}.json", "image_root": name}
            write_aspect_file(work / f"box_aspects_{name}.json", box_rows, meta={**meta, "level": "box"})
            write_aspect_file(work / f"image_aspects_{name}.json", image_rows, meta={**meta, "level": "image"})
            counts[name] = {"images": count, "boxes": len(box_rows)}
        kinds = "see makd.demo.classification.QUESTIONS"
        write_questions(work / "questions.txt", questions, meta={**fixed, "kinds": kinds})
        summary = {**params, "counts": counts, "num_classes": len(demo_classes), "num_questions": len(questions)}
        atomic_write_json(work / "dataset.json", summary)
    return {**summary, "out_dir": str(out_dir), "seconds": round(time.perf_counter() - start, 2)}


def read_detection_demo_summary(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """dataset.json of a generated detection demo folder, or None when the folder holds no complete one."""
    path = Path(out_dir) / "dataset.json"
    if not path.is_file() or not all((Path(out_dir) / f).is_file() for f in FILE_NAMES):
        return None
    return json.loads(path.read_text(encoding="utf-8"))
