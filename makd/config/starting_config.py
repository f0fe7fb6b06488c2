"""A starting config for a class-folder dataset, from what its images are like, each value with the reason it has.

`tools/init_config.py DATA --out my.yaml` measures the folder (makd.data.folder_survey) and calls
`choose_settings` with the plain facts (`DataFacts`), which picks the recipe of docs/recipes.md that fits the
images (`RECIPES`: small grey images, CIFAR-like small colour images, photos), an input size, a student that fits
it, a solver, and where stage 1 and stage 2 write their files. `render_config` writes them as a commented YAML that
`load_cfg` reads unchanged; `render_study` a study of the CE baseline, MaKD and the random-targets control.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from makd.errors import ConfigError

SMALL_MAX_SIDE = 64  # px: images up to this shorter side are "small" (mdistiller's CIFAR nets go up to 64 px)
PHOTO_SIZE = 224  # the paper's input size; larger photos are resized to it
PHOTO_RESIZE_RATIO = 1.143  # the official test Resize 256 / CenterCrop 224
MIXED_SIZE_RATIO = 4.0  # 90th / 10th percentile of the shorter side above which no one input size fits
DEFAULT_EPOCHS = 30
CACHE_LIMIT_BYTES = 2 * 2**30  # decoded, pre-resized images kept in RAM up to this much (DATASET.CACHE_IMAGES)
VAL_MIN_PER_CLASS = 20  # a validation split only when every class keeps enough training images

# The input families of docs/recipes.md: DATASET.AUGMENT values and why.
RECIPES: dict[str, dict[str, Any]] = {
    "small grey": {
        "augment": {"CROP": "rrc", "SCALE": [0.7, 1.0], "HFLIP": False},
        "why": "small grey images (digits, icons, glyphs): a mirror can turn one symbol into another and a small "
        "crop cuts strokes away, so no flip and crops of at least 70 % of the area",
        "student": "resnet20",
    },
    "cifar-like": {
        "augment": {"CROP": "crop_pad", "HFLIP": True},  # PAD set from the size below
        "why": "small colour images whose object fills the frame: the CIFAR recipe, RandomCrop with padding + flip "
        "(an 8 %-area crop would cut the object away)",
        "student": "resnet8x4",
    },
    "photos": {
        "augment": {"CROP": "rrc", "SCALE": [0.08, 1.0], "RATIO": [0.75, 1.3333], "HFLIP": True},
        "why": "photos: the paper's recipe, RandomResizedCrop(scale 0.08-1) + flip, the object survives small crops",
        "student": "resnet18",
    },
}


@dataclass
class DataFacts:
    """What the survey found, in plain numbers (the config layer knows no image files)."""

    data_dir: str  # as the user wrote it: the config's paths are relative to where the commands run
    class_names: list[str]
    num_train: int
    num_test: int
    min_train_per_class: int
    short_side_percentiles: tuple[float, float, float]  # 10th, 50th, 90th of the sampled images' shorter side
    size_range: str  # e.g. "from 96x72 to 160x120"
    sampled: int
    grey: bool
    mean: list[float]
    std: list[float]


@dataclass
class Setting:
    """One config key, its value and why it has it (the comment written beside it)."""

    key: str  # dotted, e.g. "DATASET.IMAGE_SIZE"
    value: Any
    why: str


@dataclass
class StartingConfig:
    recipe: str
    settings: list[Setting] = field(default_factory=list)

    def value(self, key: str) -> Any:
        return next(s.value for s in self.settings if s.key == key)


def _batch_size(preferred: int, num_train: int) -> int:
    """`preferred`, or a power of two giving at least 8 steps an epoch on a small training split (at least 8)."""
    fitting = 2 ** int(math.log2(max(1, num_train // 8)))
    return max(8, min(preferred, fitting))


def choose_settings(
    facts: DataFacts, *, epochs: int = DEFAULT_EPOCHS, image_size: int | None = None, config_name: str = "my"
) -> StartingConfig:
    """The settings of a starting config for `facts` (see the module). ConfigError when the image sizes are too
    mixed for one input size and `image_size` does not settle it."""
    if epochs < 1:
        raise ConfigError(f"--epochs {epochs}: must be at least 1")
    if image_size is not None and image_size < 8:
        raise ConfigError(f"--image-size {image_size}: must be at least 8 px")
    p10, p50, p90 = facts.short_side_percentiles
    if image_size is None and p90 > MIXED_SIZE_RATIO * p10:
        raise ConfigError(
            f"the training images are of very mixed sizes ({facts.size_range} px; shorter side {p10:.0f} px at the "
            f"10th percentile, {p90:.0f} at the 90th): no one input size fits them; resize them to one size, or "
            "choose one with --image-size N"
        )
    side = image_size or p50
    if side <= SMALL_MAX_SIDE:
        recipe = "small grey" if facts.grey else "cifar-like"
        size = int(round(side))
        ratio, size_why = 1.0, (f"the images' median shorter side ({p50:.0f} px): small images are used at "
                                "their own size")  # fmt: skip
        ratio_why = "test images are resized to IMAGE_SIZE and seen whole (a centre crop would cut their borders)"
    else:
        recipe = "photos"
        if image_size is not None:
            size, size_why = image_size, "chosen with --image-size"
        elif p50 >= PHOTO_SIZE * PHOTO_RESIZE_RATIO:
            size, size_why = PHOTO_SIZE, f"the paper's input size (median shorter side {p50:.0f} px)"
        else:  # smaller photos: the largest multiple of 16 that the test Resize does not enlarge
            size = max(SMALL_MAX_SIDE + 16, int(p50 / PHOTO_RESIZE_RATIO) // 16 * 16)
            size_why = (f"median shorter side {p50:.0f} px / {PHOTO_RESIZE_RATIO}, down to a multiple of 16: "
                        "the test Resize never enlarges the images much")  # fmt: skip
        ratio, ratio_why = PHOTO_RESIZE_RATIO, "the official test Resize(256) + CenterCrop(224) proportion"
    spec = RECIPES[recipe]
    augment = dict(spec["augment"])
    if augment["CROP"] == "crop_pad":
        augment["PAD"] = max(1, round(size / 8))  # 4 px at 32 px, as the CIFAR recipe
    student = spec["student"]
    batch = _batch_size(64 if size <= SMALL_MAX_SIDE else 32, facts.num_train)
    lr = round(0.1 * batch / 128, 5)
    cache_bytes = (facts.num_train + facts.num_test) * 3 * (size * ratio) ** 2 * 4 / 3
    project = facts.data_dir.rstrip("/").split("/")[-1] or "mine"
    out = StartingConfig(recipe)
    add = out.settings.append
    add(Setting("EXPERIMENT.PROJECT", project, f"run folders: output/{project}/<EXPERIMENT.NAME, default the "
                                               "config file's name>"))  # fmt: skip
    data = facts.data_dir.rstrip("/")
    add(Setting("DATASET.TYPE", "image_folder", "class folders: <root>/<class>/<image>, classes sorted by name"))
    add(Setting("DATASET.TRAIN_IMAGE_PATH", f"{data}/train", "image ids are paths relative to it (stage 2 --images)"))
    add(Setting("DATASET.TEST_IMAGE_PATH", f"{data}/test", f"{facts.num_test} test images"))
    add(Setting("DATASET.NUM_CLASS", len(facts.class_names), f"{len(facts.class_names)} class folders: "
                f"{_names(facts.class_names)}; checked against the data"))  # fmt: skip
    add(Setting("DATASET.QUESTIONS", f"{data}/questions.txt", "stage 1 writes it (or you do, then make_questions.py "
                "--check); checked against the aspect file"))  # fmt: skip
    add(Setting("DATASET.ASPECT_JSON", f"{data}/aspects_train.json", "stage 2 writes it: "
                f"make_makd_logits_json.py --images {data}/train --output {data}/aspects_train.json"))  # fmt: skip
    add(Setting("DATASET.TEST_ASPECT_JSON", "", "optional: stage 2 on the test images (--images "
                f"{data}/test --output {data}/aspects_test.json) adds the student's agreement with the teacher on "
                "test images to aspect_metrics.json"))  # fmt: skip
    add(Setting("DATASET.QUESTIONS_USED", "", "every question; '1-20' would train on the first 20 (question numbers "
                "count from 1, as the lines of the questions file), in the training and test files alike"))  # fmt: skip
    add(Setting("DATASET.IMAGE_SIZE", size, size_why))
    add(Setting("DATASET.RESIZE_RATIO", ratio, ratio_why))
    add(Setting("DATASET.MEAN", facts.mean, f"measured on {facts.sampled} training images (a pretrained student "
                "wants the statistics it was trained with, e.g. ImageNet's [0.485, 0.456, 0.406])"))  # fmt: skip
    add(Setting("DATASET.STD", facts.std, f"measured on the same {facts.sampled} images (ImageNet's: "
                "[0.229, 0.224, 0.225])"))  # fmt: skip
    for key, value in augment.items():
        why = "part of the recipe"
        if key == "CROP":
            why = f"recipe '{recipe}' (docs/recipes.md): {spec['why']}"
        elif key == "HFLIP":
            why = ("set False if a mirror image shows another class (text, digits, left/right)" if value
                   else "a mirror can turn one symbol into another")  # fmt: skip
        add(Setting(f"DATASET.AUGMENT.{key}", value, why))
    validation = facts.min_train_per_class >= VAL_MIN_PER_CLASS
    add(Setting("DATASET.VAL_FRACTION", 0.1 if validation else 0.0,
                "10 % of train held out (stratified) to choose the best epoch honestly" if validation else
                f"no validation split: the smallest class has {facts.min_train_per_class} training images "
                f"(< {VAL_MIN_PER_CLASS}); 'best' is then chosen on test, which is optimistic"))  # fmt: skip
    cached = cache_bytes <= CACHE_LIMIT_BYTES
    add(Setting("DATASET.CACHE_IMAGES", cached, f"decode and pre-resize every image once: about "
                f"{cache_bytes / 2**20:.0f} MiB of RAM" + ("" if cached else f", over the {CACHE_LIMIT_BYTES >> 30} "
                "GiB this tool allows itself")))  # fmt: skip
    add(Setting("DISTILLER.TYPE", "MaKD", "CE on the C class logits + ALPHA x BCE on the Q aspect logits; "
                "DISTILLER.TYPE NONE is the CE baseline"))  # fmt: skip
    add(Setting("DISTILLER.STUDENT", student, "a CIFAR-style net for inputs up to 64 px" if size <= SMALL_MAX_SIDE
                else "the paper's student, an ImageNet-style net from scratch"))  # fmt: skip
    add(Setting("SOLVER.EPOCHS", epochs, "a first look; the paper trains 240 epochs (configs/fine_grained/"
                "_protocol.yaml)" if epochs == DEFAULT_EPOCHS else "chosen with --epochs"))  # fmt: skip
    add(Setting("SOLVER.BATCH_SIZE", batch, f"{facts.num_train} training images: "
                f"{-(-facts.num_train // batch)} steps an epoch"))  # fmt: skip
    add(Setting("SOLVER.TYPE", "SGD", "as the official code"))
    add(Setting("SOLVER.LR", lr, "0.1 x batch / 128, the usual from-scratch SGD rate"))
    add(Setting("SOLVER.MOMENTUM", 0.9, "as the official code"))
    add(Setting("SOLVER.WEIGHT_DECAY", 0.0005, "from-scratch students on small data"))
    add(Setting("SOLVER.SCHEDULER", "cosine", "no decay epochs to tune for a short run"))
    add(Setting("MaKD.ASPECT_NUM", 0, "Q is taken from the aspect file"))
    add(Setting("MaKD.ALPHA", 4.0, "the paper's weight of the aspect BCE"))
    add(Setting("MaKD.CE_WEIGHT", 1.0, "the paper's weight of the class CE"))
    add(Setting("NUM_THREADS", 0, "auto: the usable cores, measured at start (docs/threads.md)"))
    return out


def _names(names: Sequence[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")


def _yaml_value(value: Any) -> str:
    """A scalar or a list as YAML flow text (JSON is YAML): strings quoted, floats as written."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return json.dumps(value)


def render_config(facts: DataFacts, chosen: StartingConfig, header: Sequence[str]) -> str:
    """The commented YAML of `chosen`: `header` lines first, then the keys grouped as in makd/config/defaults.py."""
    lines = [f"# {line}" if line else "#" for line in header]
    open_groups: list[str] = []  # the mapping the previous key was written in, outermost first
    for setting in chosen.settings:
        *groups, leaf = setting.key.split(".")
        shared = 0
        while shared < min(len(groups), len(open_groups)) and groups[shared] == open_groups[shared]:
            shared += 1
        for depth in range(shared, len(groups)):
            lines.append("  " * depth + f"{groups[depth]}:")
        open_groups = groups
        lines.append("  " * len(groups) + f"{leaf}: {_yaml_value(setting.value)}  # {setting.why}")
    return "\n".join(lines) + "\n"


def render_study(config_path: str, project: str, name: str, seeds: Sequence[int]) -> str:
    """A study of the CE baseline, MaKD and the random-targets control over `seeds` (docs/studies.md)."""
    return "\n".join([
        f"# Does the teacher help on {project}? The CE baseline, MaKD and the paper's random-targets control, "
        f"{len(seeds)} seed(s) each,",
        "# with paired differences to the baseline (docs/studies.md). Written by tools/init_config.py.",
        f"#   python tools/study.py {name}",
        f"name: {json.dumps(f'{project}: baseline vs MaKD vs random targets')}",
        f"base: {json.dumps(config_path)}",
        f"output: {json.dumps(f'output/studies/{project}')}",
        f"seeds: {json.dumps(list(seeds))}",
        "reference: baseline",
        "conditions:",
        "  baseline: {DISTILLER.TYPE: NONE}  # cross-entropy only, C outputs",
        "  makd: {}  # CE + ALPHA x BCE on the teacher's P(yes)",
        "  random: {MaKD.TARGETS: random}  # uniform random targets: the paper's Table 3(b) control, which helps too",
        "plots: {curves: true}",
        "",
    ])  # fmt: skip
