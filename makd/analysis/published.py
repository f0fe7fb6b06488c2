"""The papers' published numbers (published_results.yaml) and the match of a run's dataset x student to them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from makd.formats.strict_yaml import load_yaml

PUBLISHED_FILE = Path(__file__).with_name("published_results.yaml")

# Spellings of the published datasets in DATASET.TYPE, run names and paths, normalised (letters and digits).
DATASET_ALIASES = {
    "stanford_cars": ("stanfordcars", "cars"),
    "oxford_pets": ("oxfordpets", "oxfordiiitpet", "pets"),
    "dtd": ("dtd",),
    "flowers102": ("flowers102", "oxfordflowers102", "flowers"),
    "cub200": ("cub200", "cub2002011", "cub"),
    "fgvc_aircraft": ("fgvcaircraft", "aircraft"),
    "caltech101": ("caltech101", "caltech"),
    "mini_imagenet": ("miniimagenet",),
    "cifar100": ("cifar100",),
}


@dataclass(frozen=True)
class PublishedFigure:
    source: str  # key of published_results.yaml, e.g. "makd_paper"
    method: str  # e.g. "makd", "baseline"
    method_label: str
    top1: float
    citation: str
    table: str


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


@cache
def published_results(path: str = str(PUBLISHED_FILE)) -> dict[str, Any]:
    return load_yaml(Path(path).read_text(encoding="utf-8"), str(path))


def normalise_student(name: str) -> str:
    """'torchvision:ResNet18' -> 'resnet18'; 'EfficientNet-B0' -> 'efficientnet' (the papers' column names)."""
    name = _normalise(str(name).split(":")[-1])
    return "efficientnet" if name.startswith("efficientnet") else name


def dataset_of(config: dict[str, Any]) -> str | None:
    """The published dataset a run's flattened config trains on, or None.

    DATASET.TYPE first (torchvision types carry the name); else the words of EXPERIMENT.NAME, EXPERIMENT.PROJECT
    and the image / aspect paths (folder layouts such as CUB-200 only say it there).
    """
    candidates = [config.get("DATASET.TYPE", "")]
    for key in ("EXPERIMENT.NAME", "EXPERIMENT.PROJECT", "DATASET.TRAIN_IMAGE_PATH", "DATASET.ASPECT_JSON"):
        candidates += re.split(r"[/\\]", str(config.get(key, "")))
        candidates += re.split(r"[/\\_\-.]", str(config.get(key, "")))
    words = [_normalise(c) for c in candidates if c]
    for word in words:
        for dataset, aliases in DATASET_ALIASES.items():
            if word in aliases:
                return dataset
    return None


def method_key(config: dict[str, Any]) -> str:
    """The run's method as the published tables' `distiller_types` name it: DISTILLER.TYPE in upper case, with
    "+DOT" when it trains with SOLVER.TRAINER dot ("KD+DOT")."""
    key = str(config.get("DISTILLER.TYPE", "")).upper()
    return f"{key}+DOT" if str(config.get("SOLVER.TRAINER", "")).lower() == "dot" else key


def published_for(
    config: dict[str, Any], path: str = str(PUBLISHED_FILE)
) -> tuple[str | None, str, list[PublishedFigure]]:
    """(dataset, student, figures) published for the run's dataset x student; figures empty when none match.

    A source with `distiller_types` ({method: [DISTILLER.TYPE, ...]}) contributes only the figure of the run's method
    (method_key), so a table of many methods on one dataset x student puts each published number beside its row."""
    dataset, student = dataset_of(config), normalise_student(config.get("DISTILLER.STUDENT", ""))
    figures: list[PublishedFigure] = []
    if dataset is None:
        return None, student, figures
    for source, entry in published_results(path).items():
        row = entry["results"].get(dataset, {}).get(student)
        # A source that says which DISTILLER.TYPE each of its methods is shows only the run's own method.
        types = {m: {str(t).upper() for t in names} for m, names in (entry.get("distiller_types") or {}).items()}
        for method, value in (row or {}).items():
            if types and method_key(config) not in types.get(method, set()):
                continue
            figures.append(
                PublishedFigure(
                    source, method, entry["methods"][method], float(value), entry["citation"], entry["table"]
                )
            )
    return dataset, student, figures


def no_match_reason(dataset: str | None, student: str, path: str = str(PUBLISHED_FILE)) -> str:
    """Why no published figure sits beside a run of `dataset` x `student` (published_for found none): the dataset was
    not recognised, or the papers have it for other students."""
    if dataset is None:
        return (
            f"its dataset is none of the published ones ({', '.join(DATASET_ALIASES)}), as read from DATASET.TYPE, "
            "EXPERIMENT.NAME / PROJECT and the image and aspect paths"
        )
    students = sorted({s for entry in published_results(path).values() for s in entry["results"].get(dataset, {})})
    return f"{dataset} is published for {', '.join(students)}, not for {student or '(no DISTILLER.STUDENT)'}"
