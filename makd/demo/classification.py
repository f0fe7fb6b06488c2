"""The built-in demo: a synthetic fine-grained image dataset and a simulated MLLM teacher.

Nothing is downloaded. Each image shows one main shape; its class is a combination of two
attributes, a colour family (red, yellow, green, blue; hue jittered per image) and a texture
(plain, dotted, striped, checkered). All 16 pairs are classes, so every class has neighbours that
differ from it in one attribute only (fine-grained: telling them apart needs both). Per-image
nuisances make the task hard at 32 px: the shape's outline (circle, square, triangle, star), position,
size and rotation, brightness and saturation jitter, a background of random hue and brightness with a
gradient, a smaller distractor shape, a bar that hides part of the shape, and pixel noise.

The simulated teacher replaces stage 2 (InternVL). It is told the TRUE answer of every question
for every image and reports a noisy, calibrated yes-probability:

    evidence e in [-1, 1]   +1 = clearly yes, -1 = clearly no; questions about a continuous
                            property (brightness, height, size) ramp linearly near their threshold
    P(yes) = sigmoid(calibration * (MARGIN * e + noise * z)),   z ~ N(0, 1) per image and question

with MARGIN = 3, `noise` = `teacher_noise` (times `unreliable_noise_factor` for the questions in
UNRELIABLE_QUESTIONS, which the teacher answers poorly) and `calibration` = `teacher_calibration`
(< 1 under-confident, > 1 over-confident; it never changes which side of 0.5 an answer is on).
Class-level questions (colour, texture) have the same true answer for every image of a class;
image-level questions (outline, background, distractor, position, size, occlusion) vary within it.
The teacher is given the attributes, never the label; but since a class is a pair of attributes, its
correct colour and texture answers together do pin the class down, as a real MLLM's correct answers
would. That is the premise of MaKD, not a leak: the student must still infer them from pixels.

Everything is deterministic: each image and each teacher row has its own numpy Generator seeded
from (seed, split, index), so the same seed gives byte-identical PNGs and JSON files, and changing
only the teacher's parameters leaves the images unchanged.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from makd.atomic_files import atomic_write_json
from makd.errors import MakdError
from makd.formats.aspect_files import write_aspect_file
from makd.formats.files import sha256_text
from makd.formats.image_ids import image_id
from makd.formats.questions import question_problem, questions_text, write_questions

COLOUR_HUES = {"red": 0.0, "yellow": 55.0, "green": 130.0, "blue": 225.0}  # family hue centres, degrees
TEXTURES = ("plain", "dotted", "striped", "checkered")
OUTLINES = ("circle", "square", "triangle", "star")  # drawn at random per image: not part of the class

# A class is a (colour family, texture) pair: all 16 pairs, so every class has three neighbours that
# differ only in colour and three that differ only in texture.

# (question, kind, test). kind "class": the true answer is fixed by the class (attribute, yes-values);
# kind "image": it varies within a class (a fact of the rendered image).
QUESTIONS = (
    ("Is the main shape mostly red?", "class", ("colour", ("red",))),
    ("Is the main shape mostly yellow?", "class", ("colour", ("yellow",))),
    ("Is the main shape mostly green?", "class", ("colour", ("green",))),
    ("Is the main shape mostly blue?", "class", ("colour", ("blue",))),
    ("Is the main shape filled with one plain colour?", "class", ("texture", ("plain",))),
    ("Is the main shape covered in small dots?", "class", ("texture", ("dotted",))),
    ("Does the main shape have a striped texture?", "class", ("texture", ("striped",))),
    ("Does the main shape have a checkerboard pattern?", "class", ("texture", ("checkered",))),
    ("Is the pattern on the main shape made of straight lines?", "class", ("texture", ("striped", "checkered"))),
    ("Is the main shape round?", "image", "round"),
    ("Does the main shape have pointed tips?", "image", "pointed"),
    ("Is the background dark?", "image", "background_dark"),
    ("Is there a second, smaller shape in the image?", "image", "distractor"),
    ("Is the main shape in the upper half of the image?", "image", "upper_half"),
    ("Does the main shape fill a large part of the image?", "image", "large"),
    ("Is part of the main shape hidden behind a bar?", "image", "occluded"),
)
# The simulated teacher is poor at these (a small texture and a position judgement, the kind of
# detail real MLLMs get wrong): their noise is multiplied by `unreliable_noise_factor`.
UNRELIABLE_QUESTIONS = ("Is the main shape covered in small dots?", "Is the main shape in the upper half of the image?")

TEACHER_MARGIN = 3.0  # logit of a clear answer before noise: sigmoid(3) = 0.95
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down, for anti-aliased edges
HUE_JITTER = 20.0  # degrees either side of the family's centre
# Main shape radius and centre, as fractions of the image side. The shape is large and central
# because training crops are RandomResizedCrop(scale 0.08..1): a small shape would often be cut away.
RADIUS_RANGE = (0.2, 0.3)
CENTRE_RANGE = (0.4, 0.6)
LARGE_THRESHOLD, LARGE_RAMP = 0.25, 0.02  # "large" = radius above 0.25 of the side (ramp +-0.02)
UPPER_RAMP = 0.04  # "upper half" ramps over +-0.04 of the side around the middle
DARK_THRESHOLD, DARK_RAMP = 0.5, 0.12  # background value (HSV V) below 0.5 = dark
DISTRACTOR_PROB = 0.5
OCCLUSION_PROB = 0.3
PIXEL_NOISE = 0.03  # std of additive Gaussian pixel noise, in [0, 1] intensity units
FILE_NAMES = ("questions.txt", "aspects_train.json", "aspects_test.json", "truth_train.json", "truth_test.json")


@dataclass(frozen=True)
class DemoClass:
    colour: str
    texture: str

    @property
    def name(self) -> str:
        return f"{self.colour}_{self.texture}"


def demo_classes() -> list[DemoClass]:
    """The 16 demo classes, sorted by name (the label order of an image_folder dataset)."""
    classes = [DemoClass(colour, texture) for colour in COLOUR_HUES for texture in TEXTURES]
    return sorted(classes, key=lambda c: c.name)


def demo_questions() -> list[str]:
    return [q for q, _, _ in QUESTIONS]


def class_level_mask() -> np.ndarray:
    """[Q] bool: True where the question's true answer is fixed by the class."""
    return np.array([kind == "class" for _, kind, _ in QUESTIONS])


# ----------------------------------------------------------------------------- rendering
def _rgb(hue_deg: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, saturation, value), dtype=np.float32)


def _outline_points(outline: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices (pixels) of an outline of radius ~r; radii chosen so the areas are similar."""
    if outline == "circle":
        steps, radii = 48, [r]
    elif outline == "square":
        steps, radii = 4, [r * 1.15]
    elif outline == "triangle":
        steps, radii = 3, [r * 1.35]
    elif outline == "star":
        steps, radii = 10, [r * 1.35, r * 0.58]
    else:
        raise ValueError(f"unknown outline {outline!r}; use one of {', '.join(OUTLINES)}")
    points = []
    for k in range(steps):
        theta = angle + 2 * math.pi * k / steps
        rho = radii[k % len(radii)]
        points.append((cx + rho * math.cos(theta), cy + rho * math.sin(theta)))
    return points


def _polygon_mask(side: int, points: list[tuple[float, float]]) -> np.ndarray:
    canvas = Image.new("L", (side, side), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=255)
    return np.asarray(canvas, dtype=np.float32)[..., None] / 255.0


def _texture(
    texture: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, r: float, angle: float, rng: np.random.Generator
) -> np.ndarray:
    """[S, S, 1] in [0, 1]: 1 where the texture's second (darker) colour shows."""
    u = (xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)
    v = -(xs - cx) * math.sin(angle) + (ys - cy) * math.cos(angle)
    period = r * rng.uniform(0.7, 0.9)  # 4.5 to 8.6 px at 32 px: visible, yet fine at small shape sizes
    if texture == "plain":
        return np.zeros(xs.shape + (1,), dtype=np.float32)
    if texture == "striped":
        return (((u / period) % 1.0) < 0.45).astype(np.float32)[..., None]
    if texture == "dotted":
        du = (u / period) % 1.0 - 0.5
        dv = (v / period) % 1.0 - 0.5
        return ((du * du + dv * dv) < 0.3**2).astype(np.float32)[..., None]
    if texture == "checkered":
        cells = np.floor(2 * u / period) + np.floor(2 * v / period)  # squares of half a period
        return (cells % 2).astype(np.float32)[..., None]
    raise ValueError(f"unknown texture {texture!r}; use one of {', '.join(TEXTURES)}")


def render_image(cls: DemoClass, size: int, rng: np.random.Generator) -> tuple[Image.Image, dict[str, float]]:
    """One RGB image of `cls` (size x size) and its image-level facts (signed evidences in [-1, 1])."""
    side = size * SUPERSAMPLE
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5

    # Background: random hue, low saturation, any brightness, a linear gradient.
    bg_value = rng.uniform(0.1, 0.9)
    image = np.broadcast_to(_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.45), bg_value), (side, side, 3)).copy()
    gradient_angle = rng.uniform(0, 2 * math.pi)
    ramp = (xs * math.cos(gradient_angle) + ys * math.sin(gradient_angle)) / side - 0.5
    image += rng.uniform(0.0, 0.25) * ramp[..., None]

    radius = rng.uniform(*RADIUS_RANGE) * side
    cx, cy = rng.uniform(*CENTRE_RANGE, size=2) * side

    # Distractor: a smaller plain shape of any outline and hue, mostly away from the main shape.
    has_distractor = rng.random() < DISTRACTOR_PROB
    if has_distractor:
        d_radius = radius * rng.uniform(0.3, 0.45)
        for _ in range(20):  # a few tries to keep it mostly visible; overlap is allowed after that
            dx, dy = rng.uniform(d_radius, side - d_radius, size=2)
            if math.hypot(dx - cx, dy - cy) > radius + 0.5 * d_radius:
                break
        d_mask = _polygon_mask(
            side, _outline_points(OUTLINES[rng.integers(len(OUTLINES))], dx, dy, d_radius, rng.uniform(0, 2 * math.pi))
        )
        d_colour = _rgb(rng.uniform(0, 360), rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0))
        image = image * (1 - d_mask) + d_colour * d_mask

    # Main shape: any outline; the class's colour family (jittered) and texture (darker second colour).
    outline = OUTLINES[rng.integers(len(OUTLINES))]
    angle = rng.uniform(0, 2 * math.pi)
    primary = _rgb(
        COLOUR_HUES[cls.colour] + rng.uniform(-HUE_JITTER, HUE_JITTER), rng.uniform(0.5, 1.0), rng.uniform(0.55, 1.0)
    )
    secondary = primary * rng.uniform(0.3, 0.55)
    pattern = _texture(cls.texture, xs, ys, cx, cy, radius, rng.uniform(0, 2 * math.pi), rng)
    fill = primary * (1 - pattern) + secondary * pattern
    mask = _polygon_mask(side, _outline_points(outline, cx, cy, radius, angle))
    image = image * (1 - mask) + fill * mask

    # Occluder: a bar through (near) the shape, in a random dull colour.
    occluded = rng.random() < OCCLUSION_PROB
    if occluded:
        bar_angle = rng.uniform(0, math.pi)
        width = rng.uniform(0.06, 0.11) * side
        offset = rng.uniform(-0.5, 0.5) * radius
        px, py = cx - offset * math.sin(bar_angle), cy + offset * math.cos(bar_angle)
        along = (math.cos(bar_angle) * 2 * side, math.sin(bar_angle) * 2 * side)
        across = (-math.sin(bar_angle) * width / 2, math.cos(bar_angle) * width / 2)
        bar = [
            (px + sa * along[0] + sb * across[0], py + sa * along[1] + sb * across[1])
            for sa, sb in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ]
        bar_mask = _polygon_mask(side, bar)
        bar_colour = _rgb(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.2, 0.8))
        image = image * (1 - bar_mask) + bar_colour * bar_mask

    big = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    small = np.asarray(big.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
    small = small + rng.normal(0.0, PIXEL_NOISE, size=small.shape)
    out = Image.fromarray((np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")

    facts = {
        "round": 1.0 if outline == "circle" else -1.0,
        "pointed": 1.0 if outline in ("triangle", "star") else -1.0,
        "background_dark": float(np.clip((DARK_THRESHOLD - bg_value) / DARK_RAMP, -1, 1)),
        "distractor": 1.0 if has_distractor else -1.0,
        "upper_half": float(np.clip((0.5 - cy / side) / UPPER_RAMP, -1, 1)),
        "large": float(np.clip((radius / side - LARGE_THRESHOLD) / LARGE_RAMP, -1, 1)),
        "occluded": 1.0 if occluded else -1.0,
    }
    return out, facts


def question_evidence(cls: DemoClass, facts: dict[str, float]) -> np.ndarray:
    """[Q] signed evidence in [-1, 1] of every demo question for one image (> 0 means the answer is yes)."""
    evidence = np.empty(len(QUESTIONS), dtype=np.float64)
    for q, (_, kind, test) in enumerate(QUESTIONS):
        if kind == "class":
            attribute, wanted = test
            evidence[q] = 1.0 if getattr(cls, attribute) in wanted else -1.0
        else:
            evidence[q] = facts[test]
    return evidence


class DemoArgumentError(MakdError, ValueError):
    """A demo generator setting is out of its range."""


class DemoFolderExistsError(MakdError, FileExistsError):
    """The demo folder already holds files and overwriting was not asked for."""


# ----------------------------------------------------------------------------- simulated teacher
def simulate_teacher(
    evidence: np.ndarray, rng: np.random.Generator, *, noise: float, calibration: float, noise_factors: np.ndarray
) -> np.ndarray:
    """P(yes) [..., Q] = sigmoid(calibration * (TEACHER_MARGIN * evidence + noise * noise_factors * z))."""
    z = rng.standard_normal(evidence.shape)
    logits = calibration * (TEACHER_MARGIN * evidence + noise * noise_factors * z)
    return 1.0 / (1.0 + np.exp(-logits))


def simulated_cost(prompts: int) -> dict[str, Any]:
    """The cost fields of a stage-2 sidecar for a simulated teacher: the prompts a real one would have scored
    (tokens and seconds are unknown). tools/report.py shows them beside accuracy."""
    return {"prompts_scored": int(prompts), "prompt_tokens": None, "tokens_processed": None, "seconds": None,
            "simulated": True}  # fmt: skip


# ----------------------------------------------------------------------------- the generator
def _check_args(
    image_size: int,
    train_per_class: int,
    test_per_class: int,
    teacher_noise: float,
    teacher_calibration: float,
    unreliable_noise_factor: float,
) -> None:
    if not 16 <= image_size <= 256:
        raise DemoArgumentError(f"image_size {image_size} is outside 16..256 (the demo is designed for 32 to 64 px)")
    if train_per_class < 1 or test_per_class < 1:
        raise DemoArgumentError(f"train_per_class {train_per_class} and test_per_class {test_per_class} must be >= 1")
    if teacher_noise < 0 or unreliable_noise_factor < 0:
        raise DemoArgumentError(
            f"teacher_noise {teacher_noise} and unreliable_noise_factor {unreliable_noise_factor} must be >= 0"
        )
    if teacher_calibration <= 0:
        raise DemoArgumentError(f"teacher_calibration {teacher_calibration} must be > 0 (1 = calibrated)")


def _write_split(
    root: Path,
    split: int,
    name: str,
    per_class: int,
    classes: list[DemoClass],
    size: int,
    seed: int,
    teacher: dict[str, Any],
    noise_factors: np.ndarray,
) -> tuple[dict, dict]:
    """Render one split into root/<class>/<name>_<index>.png; return (teacher rows, truth rows) by image id."""
    aspects, truths = {}, {}
    for label, cls in enumerate(classes):
        (root / cls.name).mkdir(parents=True)
        for k in range(per_class):
            index = label * per_class + k
            # Separate streams for pixels and teacher, so teacher settings never change the images.
            image_rng = np.random.default_rng([seed, split, index, 0])
            teacher_rng = np.random.default_rng([seed, split, index, 1])
            image, facts = render_image(cls, size, image_rng)
            path = root / cls.name / f"{name}_{index:05d}.png"
            image.save(path, format="PNG")
            evidence = question_evidence(cls, facts)
            key = image_id(path, root)
            aspects[key] = simulate_teacher(evidence, teacher_rng, noise_factors=noise_factors, **teacher).tolist()
            truths[key] = (evidence > 0).astype(float).tolist()
    return aspects, truths


def generate_demo(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    image_size: int = 32,
    train_per_class: int = 200,
    test_per_class: int = 40,
    teacher_noise: float = 1.0,
    teacher_calibration: float = 1.0,
    unreliable_noise_factor: float = 3.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the demo dataset to `out_dir` and return a summary dict.

    Layout: train/<class>/train_<i>.png and test/<class>/test_<i>.png (RGB, image_size px square,
    16 classes), questions.txt (Q = 16), aspects_{train,test}.json (simulated teacher, [N, Q] in
    [0, 1]), truth_{train,test}.json (the true 0/1 answers, for oracle controls and checks) and
    dataset.json (classes, attributes, question kinds, parameters); each artifact has a sidecar.
    The whole folder is built in a temporary sibling and moved into place at the end, so an
    interrupted run leaves nothing half-written; an existing non-empty `out_dir` is an error
    unless `overwrite`.
    """
    _check_args(
        image_size, train_per_class, test_per_class, teacher_noise, teacher_calibration, unreliable_noise_factor
    )
    start = time.perf_counter()
    out_dir = refuse_filled_folder(out_dir, overwrite)
    classes = demo_classes()
    questions = demo_questions()
    names = [c.name for c in classes]
    for q in questions:  # a demo question must be an aspect, never a class name
        problem = question_problem(q, names)
        if problem:
            raise AssertionError(f"demo question {q!r}: {problem}")
    noise_factors = np.array([unreliable_noise_factor if q in UNRELIABLE_QUESTIONS else 1.0 for q in questions])
    teacher = {"noise": teacher_noise, "calibration": teacher_calibration}
    # Recorded in every aspect sidecar, so stage 3 refuses an edited questions.txt (DATASET.QUESTIONS).
    questions_sha256 = sha256_text(questions_text(questions))
    params = {
        "seed": seed,
        "image_size": image_size,
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "teacher_noise": teacher_noise,
        "teacher_calibration": teacher_calibration,
        "unreliable_noise_factor": unreliable_noise_factor,
    }
    teacher_meta = {
        "teacher": "simulated (makd.demo.classification.simulate_teacher), not an MLLM",
        "simulation": "P(yes) = sigmoid(calibration * (margin * evidence + noise * factor * z)), z ~ N(0, 1); "
        "evidence in [-1, 1] is the TRUE answer (+1 yes, -1 no, linear ramp near the threshold of "
        "continuous properties)",
        "margin": TEACHER_MARGIN,
        "noise": teacher_noise,
        "calibration": teacher_calibration,
        "unreliable_questions": list(UNRELIABLE_QUESTIONS),
        "unreliable_noise_factor": unreliable_noise_factor,
        "questions": questions,
        "questions_sha256": questions_sha256,
        "seed": seed,
    }

    with folder_built_aside(out_dir) as work:
        rows = {}
        for split, (name, per_class) in enumerate((("train", train_per_class), ("test", test_per_class))):
            rows[name] = _write_split(
                work / name, split, name, per_class, classes, image_size, seed, teacher, noise_factors
            )
        # Sidecars carry a fixed date so that the same seed gives byte-identical files.
        fixed = {
            "date": "generated (deterministic; no date recorded)",
            "generator": "makd.demo.classification",
            **params,
        }
        write_questions(
            work / "questions.txt", questions, meta={**fixed, "classes": names, "kinds": [k for _, k, _ in QUESTIONS]}
        )
        truth_meta = {
            **fixed,
            "teacher": "none: the true 0/1 answers (an oracle control)",
            "questions": questions,
            "questions_sha256": questions_sha256,
        }
        for name in ("train", "test"):
            aspects, truths = rows[name]
            write_aspect_file(
                work / f"aspects_{name}.json",
                aspects,
                meta={
                    **fixed,
                    **teacher_meta,
                    "split": name,
                    "image_root": name,
                    "cost": simulated_cost(len(aspects) * len(questions)),
                },
            )
            write_aspect_file(
                work / f"truth_{name}.json", truths, meta={**truth_meta, "split": name, "image_root": name}
            )
        summary = {
            **params,
            "classes": {c.name: {"colour": c.colour, "texture": c.texture} for c in classes},
            "questions": [{"question": q, "kind": k, "unreliable": q in UNRELIABLE_QUESTIONS} for q, k, _ in QUESTIONS],
            "num_classes": len(classes),
            "num_questions": len(questions),
            "num_train": train_per_class * len(classes),
            "num_test": test_per_class * len(classes),
            "teacher_accuracy_train": _teacher_accuracy(rows["train"]),
        }
        atomic_write_json(work / "dataset.json", summary)
    return {**summary, "out_dir": str(out_dir), "seconds": round(time.perf_counter() - start, 2)}


def _teacher_accuracy(rows: tuple[dict, dict]) -> dict[str, float]:
    """Per question: fraction of images where the teacher's P(yes) is on the true side of 0.5."""
    aspects, truths = rows
    keys = sorted(aspects)
    p = np.array([aspects[k] for k in keys])
    t = np.array([truths[k] for k in keys])
    return {q: round(float(a), 4) for q, a in zip(demo_questions(), ((p > 0.5) == (t > 0.5)).mean(axis=0))}


def refuse_filled_folder(
    out_dir: str | os.PathLike, overwrite: bool, what: str = "demo folder", flag: str = "--overwrite"
) -> Path:
    """`out_dir` as a Path; DemoFolderExistsError when it exists, holds anything and `overwrite` is off (a demo
    generator replaces the whole folder, so a folder with the user's own files is never taken without asking)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise DemoFolderExistsError(
            f"{what} {out_dir} already exists and is not empty; pass overwrite=True ({flag}) to replace it or "
            "choose another folder"
        )
    return out_dir


@contextmanager
def folder_built_aside(out_dir: Path) -> Iterator[Path]:
    """A temporary sibling of `out_dir` to write a demo folder into: moved into place when the block ends, removed
    when it raises (so an interrupted run never leaves a half-written folder, nor loses the previous one)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield work
        _move_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _move_into_place(work: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(work, out_dir)
        shutil.rmtree(old)
    else:
        os.replace(work, out_dir)
    os.chmod(out_dir, 0o755)  # mkdtemp makes 0700 folders


def read_demo_summary(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """dataset.json of a generated demo folder, or None when the folder holds no complete demo."""
    path = Path(out_dir) / "dataset.json"
    if not path.is_file() or not all((Path(out_dir) / f).is_file() for f in FILE_NAMES):
        return None
    return json.loads(path.read_text(encoding="utf-8"))
