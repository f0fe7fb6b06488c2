"""The oriented demo variant: small grey glyphs whose class is their left/right orientation, and a teacher
that answered the unflipped image (issue 9: what the training recipe does to the teacher's targets).

Ten classes: five glyphs (arrow, hook, flag, ramp, post) each facing right or left; a left-facing class is the
mirror image of its right-facing twin. So a horizontal flip turns an image into another class (the label is
wrong on every flipped view), and a flip also changes the true answer of every orientation question ("Does the
shape face left?", "Is the shape mostly in the left half?", "Is the shape tilted clockwise?"): the targets the
simulated teacher gave for the unflipped image are wrong on the flipped view. Per-image nuisances: position,
size, a small rotation, background grey level, the glyph brighter or darker than the background, up to two
small dots (one per half), pixel noise. Images are grey (saved as 8-bit grey PNGs), 28 px by default.

An image is a `GlyphSpec` (everything drawn); `render_spec` draws it and `spec_evidence` is the rule of the
simulated teacher, the signed evidence of each question read from the spec. `mirror_spec` is the spec of the
horizontally mirrored image: render_spec(mirror_spec(s)) is ImageOps.mirror(render_spec(s)) (up to polygon
rasterisation), which the tests check together with the answers that change.

The teacher is makd.demo.classification's (sigmoid of margin x evidence + noise). Its rows for the mirrored images are
written too (`aspects_train.flip.json`, sidecar view "hflip", the same noise draw as the unflipped row), the file
stage 2 `--views flip` writes, for DATASET.ASPECT_JSON_FLIP. The questions file's sidecar declares the
orientation questions (`flip_sensitive`, `flip_mirror`), which makd.data.views reads. Same seed, same bytes.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from makd.atomic_files import atomic_write_json
from makd.demo.classification import (
    SUPERSAMPLE,
    TEACHER_MARGIN,
    DemoArgumentError,
    _outline_points,
    _polygon_mask,
    folder_built_aside,
    refuse_filled_folder,
    simulate_teacher,
    simulated_cost,
)
from makd.formats.aspect_files import write_aspect_file
from makd.formats.files import sha256_text
from makd.formats.image_ids import image_id
from makd.formats.question_numbers import as_q_items
from makd.formats.questions import questions_text, write_questions

GLYPHS = ("arrow", "hook", "flag", "ramp", "post")
FACINGS = ("left", "right")


def _rect(x0: float, y0: float, x1: float, y1: float) -> tuple[tuple[float, float], ...]:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


# Each glyph facing right, as polygons in units of the glyph radius (x right, y down, centre at 0).
GLYPH_POLYGONS = {
    "arrow": (_rect(-0.9, -0.16, 0.15, 0.16), ((0.15, -0.55), (0.9, 0.0), (0.15, 0.55))),
    "hook": (_rect(-0.6, -0.85, -0.3, 0.85), _rect(-0.3, -0.85, 0.75, -0.55)),
    "flag": (_rect(-0.6, -0.9, -0.38, 0.9), ((-0.38, -0.9), (0.8, -0.5), (-0.38, -0.1))),
    "ramp": (((-0.75, 0.7), (0.75, 0.7), (0.75, -0.75)),),
    "post": (_rect(-0.55, -0.85, -0.25, 0.85), _rect(-0.25, -0.85, 0.6, -0.05)),
}

# (question, kind, rule). kind "class": fixed by the class; "image": a fact of the drawn image.
# flip: "sensitive" when a horizontal mirror changes the true answer.
QUESTIONS = (
    ("Does the shape face left?", "class", "faces_left"),
    ("Does the shape face right?", "class", "faces_right"),
    ("Is the shape an arrow?", "class", "glyph_arrow"),
    ("Is the shape a hook with one arm?", "class", "glyph_hook"),
    ("Is the shape a pole with a triangular flag?", "class", "glyph_flag"),
    ("Is the shape a right-angled triangle?", "class", "glyph_ramp"),
    ("Is the shape a pole with a square block on top?", "class", "glyph_post"),
    ("Is the shape mostly in the left half of the image?", "image", "left_half"),
    ("Is the shape mostly in the right half of the image?", "image", "right_half"),
    ("Is there a small dot in the left half of the image?", "image", "dot_left"),
    ("Is there a small dot in the right half of the image?", "image", "dot_right"),
    ("Is the shape tilted clockwise?", "image", "clockwise"),
    ("Is the shape in the upper half of the image?", "image", "upper_half"),
    ("Does the shape fill a large part of the image?", "image", "large"),
    ("Is the background dark?", "image", "background_dark"),
    ("Is the shape brighter than the background?", "image", "brighter"),
)
# 0-based positions in QUESTIONS; the sidecar says them as question numbers ("q1", ...: makd.formats.question_numbers)
FLIP_MIRROR = ((0, 1), (7, 8), (9, 10))  # answers that swap under a horizontal mirror
FLIP_SENSITIVE = (0, 1, 7, 8, 9, 10, 11)  # ... and "tilted clockwise", which has no twin question

RADIUS_RANGE = (0.24, 0.34)  # glyph radius, fraction of the side
CENTRE_RANGE = (0.36, 0.64)
ANGLE_RANGE = 25.0  # degrees either way; positive = clockwise on screen (y points down)
HALF_RAMP, UPPER_RAMP, TILT_RAMP = 0.04, 0.04, 8.0
LARGE_THRESHOLD, LARGE_RAMP = 0.29, 0.02
DARK_THRESHOLD, DARK_RAMP = 0.5, 0.12
DOT_PROB, DOT_RADIUS = 0.4, 0.05  # each half independently; radius as a fraction of the side
PIXEL_NOISE = 0.04
FILE_NAMES = ("questions.txt", "aspects_train.json", "aspects_test.json", "aspects_train.flip.json", "dataset.json")


@dataclass(frozen=True)
class GlyphSpec:
    """Everything drawn in one image; lengths and positions are fractions of the side."""

    glyph: str
    facing: str
    cx: float
    cy: float
    radius: float
    angle: float  # degrees, clockwise on screen
    background: float  # grey level in [0, 1]
    foreground: float
    dots: tuple[tuple[float, float], ...]

    @property
    def class_name(self) -> str:
        return f"{self.glyph}_{self.facing}"


def oriented_classes() -> list[tuple[str, str]]:
    """(glyph, facing) of the 10 classes, sorted by class name (the label order of an image_folder dataset)."""
    return sorted(((g, f) for g in GLYPHS for f in FACINGS), key=lambda c: f"{c[0]}_{c[1]}")


def oriented_questions() -> list[str]:
    return [q for q, _, _ in QUESTIONS]


def draw_spec(glyph: str, facing: str, rng: np.random.Generator) -> GlyphSpec:
    """The random nuisances of one image of class (glyph, facing)."""
    background = float(rng.uniform(0.1, 0.9))
    contrast = float(rng.uniform(0.35, 0.6))
    brighter = rng.random() < 0.5
    if background + contrast > 1.0:  # keep the glyph's grey level inside [0, 1] where the side allows it
        brighter = False
    elif background - contrast < 0.0:
        brighter = True
    foreground = min(1.0, background + contrast) if brighter else max(0.0, background - contrast)
    cx, cy = rng.uniform(*CENTRE_RANGE, size=2)
    dots = []
    for low in (0.08, 0.58):  # one possible dot per half, never on the middle line
        if rng.random() < DOT_PROB:
            dots.append((float(rng.uniform(low, low + 0.34)), float(rng.uniform(0.1, 0.9))))
    return GlyphSpec(
        glyph=glyph,
        facing=facing,
        cx=float(cx),
        cy=float(cy),
        radius=float(rng.uniform(*RADIUS_RANGE)),
        angle=float(rng.uniform(-ANGLE_RANGE, ANGLE_RANGE)),
        background=background,
        foreground=float(foreground),
        dots=tuple(dots),
    )


def mirror_spec(spec: GlyphSpec) -> GlyphSpec:
    """The spec of the left-right mirrored image: the other facing, x -> 1 - x, the rotation reversed."""
    return replace(
        spec,
        facing="left" if spec.facing == "right" else "right",
        cx=1.0 - spec.cx,
        angle=-spec.angle,
        dots=tuple(sorted((1.0 - x, y) for x, y in spec.dots)),
    )


def render_spec(spec: GlyphSpec, size: int, noise_rng: np.random.Generator | None = None) -> Image.Image:
    """The grey (mode "L") size x size image of `spec`; pixel noise only when `noise_rng` is given."""
    side = size * SUPERSAMPLE
    sign = 1.0 if spec.facing == "right" else -1.0
    cos_a, sin_a = math.cos(math.radians(spec.angle)), math.sin(math.radians(spec.angle))
    r, cx, cy = spec.radius * side, spec.cx * side, spec.cy * side
    shape = np.zeros((side, side, 1), dtype=np.float32)
    for polygon in GLYPH_POLYGONS[spec.glyph]:
        points = [
            (cx + r * (sign * gx * cos_a - gy * sin_a), cy + r * (sign * gx * sin_a + gy * cos_a)) for gx, gy in polygon
        ]
        shape = np.maximum(shape, _polygon_mask(side, points))
    for x, y in spec.dots:
        shape = np.maximum(
            shape, _polygon_mask(side, _outline_points("circle", x * side, y * side, DOT_RADIUS * side, 0.0))
        )
    grey = spec.background * (1 - shape[..., 0]) + spec.foreground * shape[..., 0]
    big = Image.fromarray((np.clip(grey, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
    small = np.asarray(big.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
    if noise_rng is not None:
        small = small + noise_rng.normal(0.0, PIXEL_NOISE, size=small.shape)
    return Image.fromarray((np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8), "L")


def _ramp(value: float, ramp: float) -> float:
    return float(np.clip(value / ramp, -1.0, 1.0))


def spec_evidence(spec: GlyphSpec) -> np.ndarray:
    """[Q] signed evidence in [-1, 1] of every question for the image of `spec` (> 0 = yes): the teacher's rule."""
    facts = {
        "faces_left": 1.0 if spec.facing == "left" else -1.0,
        "faces_right": 1.0 if spec.facing == "right" else -1.0,
        **{f"glyph_{g}": 1.0 if spec.glyph == g else -1.0 for g in GLYPHS},
        "left_half": _ramp(0.5 - spec.cx, HALF_RAMP),
        "right_half": _ramp(spec.cx - 0.5, HALF_RAMP),
        "dot_left": 1.0 if any(x < 0.5 for x, _ in spec.dots) else -1.0,
        "dot_right": 1.0 if any(x > 0.5 for x, _ in spec.dots) else -1.0,
        "clockwise": _ramp(spec.angle, TILT_RAMP),
        "upper_half": _ramp(0.5 - spec.cy, UPPER_RAMP),
        "large": _ramp(spec.radius - LARGE_THRESHOLD, LARGE_RAMP),
        "background_dark": _ramp(DARK_THRESHOLD - spec.background, DARK_RAMP),
        "brighter": 1.0 if spec.foreground > spec.background else -1.0,
    }
    return np.array([facts[rule] for _, _, rule in QUESTIONS], dtype=np.float64)


def _write_split(root: Path, split: int, name: str, per_class: int, size: int, seed: int, teacher: dict) -> dict:
    """Render one split into root/<class>/<name>_<i>.png; return {"teacher", "flip", "truth", "truth_flip"} rows."""
    rows: dict[str, dict] = {"teacher": {}, "flip": {}, "truth": {}, "truth_flip": {}}
    ones = np.ones(len(QUESTIONS))
    for label, (glyph, facing) in enumerate(oriented_classes()):
        (root / f"{glyph}_{facing}").mkdir(parents=True)
        for k in range(per_class):
            index = label * per_class + k
            image_rng = np.random.default_rng([seed, split, index, 0])
            spec = draw_spec(glyph, facing, image_rng)
            path = root / spec.class_name / f"{name}_{index:05d}.png"
            render_spec(spec, size, image_rng).save(path, format="PNG")
            key = image_id(path, root)
            evidence, mirrored = spec_evidence(spec), spec_evidence(mirror_spec(spec))
            # The same noise draw for both views: the mirrored row differs only where the true answer does.
            for out, e in (("teacher", evidence), ("flip", mirrored)):
                rng = np.random.default_rng([seed, split, index, 1])
                rows[out][key] = simulate_teacher(e, rng, noise_factors=ones, **teacher).tolist()
            rows["truth"][key] = (evidence > 0).astype(float).tolist()
            rows["truth_flip"][key] = (mirrored > 0).astype(float).tolist()
    return rows


def generate_oriented_demo(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    image_size: int = 28,
    train_per_class: int = 30,
    test_per_class: int = 30,
    teacher_noise: float = 1.0,
    teacher_calibration: float = 1.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the oriented variant to `out_dir` (built in a temporary sibling, moved into place at the end).

    Layout: train/<class>/train_<i>.png, test/<class>/test_<i>.png (10 classes), questions.txt (Q = 16,
    sidecar with flip_sensitive / flip_mirror), aspects_{train,test}.json (the teacher on the unflipped images),
    aspects_train.flip.json (the teacher on the mirrored training images, view "hflip"),
    truth_{train,test}.json and dataset.json.
    """
    if not 16 <= image_size <= 128:
        raise DemoArgumentError(f"image_size {image_size} is outside 16..128 (the oriented demo is designed for 28 px)")
    if train_per_class < 1 or test_per_class < 1:
        raise DemoArgumentError(f"train_per_class {train_per_class} and test_per_class {test_per_class} must be >= 1")
    if teacher_noise < 0 or teacher_calibration <= 0:
        raise DemoArgumentError(f"teacher_noise {teacher_noise} must be >= 0 and calibration {teacher_calibration} > 0")
    start = time.perf_counter()
    out_dir = refuse_filled_folder(out_dir, overwrite)
    questions = oriented_questions()
    q_sha = sha256_text(questions_text(questions))
    teacher = {"noise": teacher_noise, "calibration": teacher_calibration}
    params = {"variant": "oriented", "seed": seed, "image_size": image_size, "train_per_class": train_per_class,
              "test_per_class": test_per_class, "teacher_noise": teacher_noise,
              "teacher_calibration": teacher_calibration}  # fmt: skip
    fixed = {"date": "generated (deterministic; no date recorded)", "generator": "makd.demo.oriented", **params}
    teacher_meta = {
        **fixed,
        "teacher": (
            "simulated (makd.demo.classification.simulate_teacher on makd.demo.oriented.spec_evidence), not an MLLM"
        ),
        "margin": TEACHER_MARGIN,
        "questions": questions,
        "questions_sha256": q_sha,
    }
    with folder_built_aside(out_dir) as work:
        rows = {
            name: _write_split(work / name, split, name, per_class, image_size, seed, teacher)
            for split, (name, per_class) in enumerate((("train", train_per_class), ("test", test_per_class)))
        }
        write_questions(
            work / "questions.txt",
            questions,
            meta={**fixed, "kinds": [k for _, k, _ in QUESTIONS], "flip_sensitive": as_q_items(FLIP_SENSITIVE),
                  "flip_mirror": as_q_items(FLIP_MIRROR)},
        )  # fmt: skip
        for name in ("train", "test"):
            n = len(rows[name]["teacher"])
            write_aspect_file(
                work / f"aspects_{name}.json",
                rows[name]["teacher"],
                meta={**teacher_meta, "split": name, "image_root": name, "cost": simulated_cost(n * len(questions))},
            )
            truth_meta = {**teacher_meta, "teacher": "none: the true 0/1 answers (an oracle control)"}
            write_aspect_file(work / f"truth_{name}.json", rows[name]["truth"], meta={**truth_meta, "split": name})
        write_aspect_file(
            work / "aspects_train.flip.json",
            rows["train"]["flip"],
            meta={**teacher_meta, "split": "train", "image_root": "train", "view": "hflip",
                  "cost": simulated_cost(len(rows["train"]["flip"]) * len(questions))},
        )  # fmt: skip
        truth, truth_flip = (np.array(list(rows["train"][k].values())) for k in ("truth", "truth_flip"))
        summary = {
            **params,
            "classes": [f"{g}_{f}" for g, f in oriented_classes()],
            "questions": [
                {"question": q, "kind": k, "flip_sensitive": i in FLIP_SENSITIVE}
                for i, (q, k, _) in enumerate(QUESTIONS)
            ],
            "flip_mirror": as_q_items(FLIP_MIRROR),
            "num_classes": len(GLYPHS) * len(FACINGS),
            "num_questions": len(questions),
            "num_train": train_per_class * len(GLYPHS) * len(FACINGS),
            "num_test": test_per_class * len(GLYPHS) * len(FACINGS),
            # What the official transform's flip does to the teacher's targets: hard answers that change.
            "hard_answers_changed_by_flip": round(float((truth != truth_flip).mean()), 4),
        }
        atomic_write_json(work / "dataset.json", summary)
    return {**summary, "out_dir": str(out_dir), "seconds": round(time.perf_counter() - start, 2)}
