"""A simulated class-level teacher for the demo: a text-only "LLM" that knows each class's definition, no image.

The per-image teacher of makd.demo.classification is told every image's true answers. This one is told only the class:
for each class c and question q it answers from the class's generative rule, the expected evidence

    e(c, q) = E[evidence_q | class c]        over images rendered for c (makd.demo.classification.render_image)
    P(yes)  = sigmoid(calibration * (TEACHER_MARGIN * e(c, q) + noise * z)),   z ~ N(0, 1) per class and question

The same formula as the per-image teacher (makd.demo.classification.simulate_teacher), with the image's evidence
replaced by its class expectation. Colour and texture questions are fixed by the class (e = +1 or -1, as a text LLM that
knows "red_striped" would answer); image-level questions (outline, position, background, distractor, occlusion)
do not depend on the class, so e is their base rate (for example "Is the main shape round?": one outline in
four, e = -0.5). The expectation is estimated from `samples` renders per class; render k of every class uses
the same seed (common random numbers), and the image-level facts are drawn the same way whatever the class, so
those questions get the same expectation for every class: the estimate's own error is no class signal. The noise
is the teacher's own, drawn once per (class, question): every image of a class gets the same row, as from a real
class-level teacher. The per-image teacher's extra noise on its UNRELIABLE_QUESTIONS is a visual failure and is
not applied here.

Files, next to the demo's own (written atomically, with sidecars):
- `class_teacher.json`: `{class_name: [p_1..p_Q]}`, the format of stage 2 `--level class`;
- `class_teacher_train.json` / `class_teacher_test.json`: its rows spread to every image of the split by
  `aspects convert` (makd.formats.conversion), which MaKD trains on; their sidecars name the per-class file
  and its sha256, so a run report finds the teacher's cost through them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from makd.data.labelled_images import folder_images
from makd.demo.classification import (
    QUESTIONS,
    TEACHER_MARGIN,
    DemoArgumentError,
    DemoClass,
    demo_classes,
    demo_questions,
    question_evidence,
    read_demo_summary,
    render_image,
    simulate_teacher,
    simulated_cost,
)
from makd.errors import MakdError
from makd.formats.conversion import convert, write_conversion
from makd.formats.questions import questions_sha256
from makd.formats.target_sources.per_class import write_class_rows
from makd.formats.tolerant_reader import read_raw

CLASS_FILE = "class_teacher.json"
SPREAD_FILES = {"train": "class_teacher_train.json", "test": "class_teacher_test.json"}
EXPECTATION_SPLIT = 2  # seed stream of the expectation renders: the splits use 0 (train) and 1 (test)
EXPECTATION_SIZE = 16  # the facts are fractions of the side, so a small render gives the same expectation


class DemoClassTeacherError(MakdError, FileExistsError):
    """The class-level teacher's files cannot be written (no demo folder, existing files)."""


def expected_evidence(cls: DemoClass, label: int, seed: int, samples: int) -> np.ndarray:
    """[Q] mean signed evidence of every demo question over `samples` images rendered for `cls`."""
    total = np.zeros(len(QUESTIONS))
    for k in range(samples):
        rng = np.random.default_rng([seed, EXPECTATION_SPLIT, k])  # not the label: see the module docstring
        _, facts = render_image(cls, EXPECTATION_SIZE, rng)
        total += question_evidence(cls, facts)
    return total / samples


def simulate_class_teacher(
    seed: int = 0, *, noise: float = 1.0, calibration: float = 1.0, samples: int = 400
) -> dict[str, list[float]]:
    """{class name: P(yes) [Q]} in the demo's class order (see the module docstring)."""
    if noise < 0 or calibration <= 0 or samples < 1:
        raise DemoArgumentError(
            f"class teacher noise {noise} must be >= 0, calibration {calibration} > 0 and samples {samples} >= 1"
        )
    rows = {}
    ones = np.ones(len(QUESTIONS))
    for label, cls in enumerate(demo_classes()):
        evidence = expected_evidence(cls, label, seed, samples)
        rng = np.random.default_rng([seed, EXPECTATION_SPLIT, label, samples, 1])  # the teacher's own noise
        rows[cls.name] = simulate_teacher(evidence, rng, noise=noise, calibration=calibration, noise_factors=ones)
    return {name: [float(p) for p in row] for name, row in rows.items()}


def write_class_teacher(
    demo_dir: str | os.PathLike,
    *,
    noise: float = 1.0,
    calibration: float = 1.0,
    samples: int = 400,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write class_teacher.json (+ sidecar) and its spread to the train and test images of `demo_dir`.

    Returns the per-class file's sidecar. The demo's seed (dataset.json) seeds the teacher.
    """
    demo_dir = Path(demo_dir)
    summary = read_demo_summary(demo_dir)
    if summary is None:
        raise DemoClassTeacherError(f"{demo_dir} holds no complete demo; run tools/make_demo.py --out {demo_dir} first")
    targets = [demo_dir / CLASS_FILE, *(demo_dir / name for name in SPREAD_FILES.values())]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise DemoClassTeacherError(f"{existing[0]} already exists; pass --overwrite to replace it")
    seed = int(summary["seed"])
    rows = simulate_class_teacher(seed, noise=noise, calibration=calibration, samples=samples)
    questions = demo_questions()
    meta = {
        "tool": "makd.demo.class_teacher (simulated; not an LLM)",
        "level": "class",
        "kind": "yes_no",
        "questions_file": "questions.txt",
        "questions_sha256": questions_sha256(questions),
        "num_questions": len(questions),
        "questions": questions,
        "classes_file": None,
        "num_classes": len(rows),
        "classes": list(rows),
        "templates": None,
        "teacher": {
            "backend": "simulated",
            "simulation": "P(yes) = sigmoid(calibration * (margin * E[evidence | class] + noise * z)), "
            "z ~ N(0, 1) per class and question; E over `samples` renders of the class",
            "margin": TEACHER_MARGIN,
            "noise": noise,
            "calibration": calibration,
            "samples": samples,
            "seed": seed,
        },
        "resumed_rows": 0,
        "cost": simulated_cost(len(rows) * len(questions)),
        "cost_this_run": simulated_cost(len(rows) * len(questions)),
        "written": "generated (deterministic; no date recorded)",
    }
    class_file = demo_dir / CLASS_FILE
    write_class_rows(class_file, rows, meta)
    raw = read_raw(class_file)
    for split, name in SPREAD_FILES.items():
        result = convert(raw, folder_images(demo_dir / split), level="class")
        write_conversion(demo_dir / name, raw, result, command=f"makd.demo.class_teacher ({split} split)")
    return meta
