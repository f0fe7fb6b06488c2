"""build_data(cfg): the train / validation / test datasets of a run, checked against the config.

Order: layout -> NUM_CLASS check -> validation carve -> aspect join -> target control -> image check
(or the cache pass, which decodes every image anyway). The cheap checks come first, so a wrong key
fails at once; the image check then decodes every image that will be read before the first epoch.
The validation split is carved from the training images BEFORE the aspect join, so it depends
only on the image list, DATASET.VAL_FRACTION and DATASET.VAL_SEED: the baseline and every MaKD
variant (any aspect file, MISSING_ASPECTS policy or MaKD.TARGETS) are selected on the same images.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from makd.config.defaults import distiller_of, uses_aspects
from makd.data.aspect_targets import make_targets
from makd.data.batch_mixing import BatchMixer
from makd.data.datasets import AspectDataset
from makd.data.device_batch import DevicePreprocess
from makd.data.image_cache import cache_splits
from makd.data.image_check import bad_images_error, check_images, image_problem
from makd.data.image_index import ImageIndex
from makd.data.layouts import build_image_indexes
from makd.data.loader_settings import worker_count
from makd.data.splits import stratified_split
from makd.data.transforms import AugmentSpec, border_crop_warning, shorter_side_size, test_transform, train_transform
from makd.data.views import view_policy_from_cfg
from makd.errors import ConfigError
from makd.formats.conversion import read_class_map
from makd.formats.question_numbers import AspectColumns, format_ranges
from makd.formats.target_sources import ANY_KIND, TargetSource, open_source
from makd.formats.target_sources.mixed import MixedSource
from makd.formats.target_sources.per_image import MissingRowsError, join_aspects
from makd.formats.target_sources.selection import SelectedQuestions

logger = logging.getLogger(__name__)


@dataclass
class DataBundle:
    """Everything the trainer needs from the data; `num_aspects` is 0 for DISTILLER.TYPE NONE."""

    train: AspectDataset
    val: AspectDataset | None
    test: AspectDataset
    class_names: list[str]
    num_classes: int
    num_aspects: int
    aspect_path: str = ""
    aspect_sha256: str = ""
    dropped_ids: list[str] = field(default_factory=list)  # training images left out by MISSING_ASPECTS drop
    test_aspect_path: str = ""
    test_aspect_sha256: str = ""
    recipe: dict = field(default_factory=dict)  # augmentation, batch mixing and view policy, for summary.json
    aspect_sources: list[dict] = field(default_factory=list)  # describe() of each training target file, for summary
    # which question (1-based number in the questions file) each aspect column answers; None without aspects
    aspect_columns: AspectColumns | None = None


def check_num_classes(cfg, train: ImageIndex) -> int:
    """C from the data, checked against DATASET.NUM_CLASS (0 = take it from the data)."""
    found = train.num_classes
    if cfg.DATASET.NUM_CLASS not in (0, found):
        where = train.root or train.source
        raise ConfigError(
            f"DATASET.NUM_CLASS is {cfg.DATASET.NUM_CLASS} but {where} has {found} classes; "
            f"set DATASET.NUM_CLASS {found}"
        )
    return found


def has_training_targets(cfg) -> bool:
    """Whether the config names training targets (DATASET.ASPECT_JSON or DATASET.ASPECT_SOURCES)."""
    return bool(cfg.DATASET.ASPECT_JSON or cfg.DATASET.ASPECT_SOURCES)


def open_aspect_file(
    cfg, path: str, key: str, class_names: list[str], kinds: tuple[str, ...] = ANY_KIND
) -> TargetSource:
    """A training target file of one of `kinds` (default any: per image, per class, multiple choice), recognised
    by its keys."""
    class_map = read_class_map(cfg.DATASET.ASPECT_CLASS_MAP) if cfg.DATASET.ASPECT_CLASS_MAP else None
    return open_source(
        path,
        key=key,
        class_names=class_names,
        kinds=kinds,
        class_map=class_map,
        class_map_key="DATASET.ASPECT_CLASS_MAP",
    )


# How many images without an aspect row are decoded to tell a bad file from a missing row.
_BLAME_CHECK_LIMIT = 64


def join_targets(
    source: TargetSource, index: ImageIndex, missing: str = "error", role: str = "training"
) -> tuple[ImageIndex, np.ndarray]:
    """source.join; for training images, when rows are missing and one of those images is not a readable image,
    the error says what is wrong with that file (a text file named .png is not a missing row)."""
    try:
        return source.join(index, missing, role)
    except MissingRowsError as err:
        if role != "training" or index.paths is None:
            raise
        absent = err.positions[:_BLAME_CHECK_LIMIT]
        problems = [m for m in (image_problem(index.paths[p]) for p in absent) if m]
        if problems:
            raise bad_images_error(problems, len(absent)) from None
        raise


def training_source(cfg, class_names: list[str], kinds: tuple[str, ...] = ANY_KIND) -> TargetSource:
    """DATASET.ASPECT_JSON (or the files of DATASET.ASPECT_SOURCES, by question) as one target source, restricted to
    DATASET.QUESTIONS_USED, checked against MaKD.ASPECT_NUM and (when set) DATASET.QUESTIONS."""
    d = cfg.DATASET
    if d.ASPECT_SOURCES:
        if d.ASPECT_JSON:
            raise ConfigError(
                f"DATASET.ASPECT_JSON ({d.ASPECT_JSON}) and DATASET.ASPECT_SOURCES are both set; use one "
                "(ASPECT_SOURCES assembles several files by question; list this file there)"
            )
        if d.ASPECT_JSON_FLIP:
            raise ConfigError(
                "DATASET.ASPECT_JSON_FLIP is not read with DATASET.ASPECT_SOURCES (mirrored-view rows of mixed sources "
                "are not supported); set DATASET.ASPECT_JSON_FLIP '' (MaKD.FLIP_POLICY then applies)"
            )
        entries = [str(e) for e in d.ASPECT_SOURCES]
        source = MixedSource.open_entries(
            entries, lambda path: open_aspect_file(cfg, path, "DATASET.ASPECT_SOURCES", class_names, kinds)
        )
        if len(source.parts) == 1 and len(source.parts[0].questions) < source.parts[0].source.num_questions:
            # the old way to train on some questions; it left the test file whole, so its metrics did not fit
            path = source.parts[0].source.path
            logger.warning(
                "DATASET.ASPECT_SOURCES [%r] takes some questions of one file for training only; DATASET.ASPECT_JSON "
                "%s with DATASET.QUESTIONS_USED %r selects them in the test file (DATASET.TEST_ASPECT_JSON) too",
                entries[0], path, format_ranges(source.parts[0].questions),
            )  # fmt: skip
    elif not d.ASPECT_JSON:
        raise ConfigError(
            f"DATASET.ASPECT_JSON is empty; DISTILLER.TYPE {cfg.DISTILLER.TYPE} needs the stage-2 aspect file "
            "(set it, or use DISTILLER.TYPE NONE for the baseline)"
        )
    else:
        source = open_aspect_file(cfg, d.ASPECT_JSON, "DATASET.ASPECT_JSON", class_names, kinds)
    whole = source
    source = SelectedQuestions.of(source, d.QUESTIONS_USED)
    if cfg.MaKD.ASPECT_NUM not in (0, source.num_aspects):  # 0 = take Q from the file
        chosen = f", of which DATASET.QUESTIONS_USED {d.QUESTIONS_USED!r} takes {source.num_aspects}"
        chosen = chosen if source is not whole else ""
        raise ConfigError(
            f"MaKD.ASPECT_NUM is {cfg.MaKD.ASPECT_NUM} but {source.path} has {whole.num_aspects} aspects per image"
            f"{chosen}; set MaKD.ASPECT_NUM {source.num_aspects} (or 0: from the file)"
        )
    if d.QUESTIONS:
        source.check_questions(d.QUESTIONS)
    return source


def open_test_source(cfg, class_names: list[str], training: TargetSource | None) -> TargetSource | None:
    """DATASET.TEST_ASPECT_JSON restricted to DATASET.QUESTIONS_USED as the training file is, checked to answer as
    many questions as the `training` source (None: not checked); None when unset."""
    path = cfg.DATASET.TEST_ASPECT_JSON
    if not path:
        return None
    whole = open_aspect_file(cfg, path, "DATASET.TEST_ASPECT_JSON", class_names)
    training_whole = training.source if isinstance(training, SelectedQuestions) else training
    if training_whole is not None and whole.num_aspects != training_whole.num_aspects:
        what = "DATASET.ASPECT_SOURCES take" if cfg.DATASET.ASPECT_SOURCES else "DATASET.ASPECT_JSON has"
        raise ConfigError(
            f"DATASET.TEST_ASPECT_JSON {whole.path} has {whole.num_aspects} aspects per image but {what} "
            f"{training_whole.num_aspects}; use the test file made with the same questions"
            + (" (DATASET.QUESTIONS_USED then selects in both)" if cfg.DATASET.QUESTIONS_USED else "")
        )
    return SelectedQuestions.of(whole, cfg.DATASET.QUESTIONS_USED)


def _test_targets(cfg, test: ImageIndex, training: TargetSource) -> tuple[np.ndarray | None, TargetSource | None]:
    """Test rows only from DATASET.TEST_ASPECT_JSON: release train and test folders reuse ids like cat_0_1."""
    source = open_test_source(cfg, list(test.class_names), training)
    if source is None:
        return None, None
    return join_targets(source, test, "nan", role="test")[1], source


def _flipped_rows(cfg, train: ImageIndex, training: TargetSource) -> tuple[np.ndarray | None, str]:
    """DATASET.ASPECT_JSON_FLIP rows (the teacher's answers for the mirrored images) in train order."""
    path = cfg.DATASET.ASPECT_JSON_FLIP
    if not path:
        return None, ""
    whole = open_source(path, key="DATASET.ASPECT_JSON_FLIP", kinds=("per_image",))
    training_whole = training.source if isinstance(training, SelectedQuestions) else training
    if whole.num_aspects != training_whole.num_aspects:  # the same questions file, before any selection
        raise ConfigError(
            f"DATASET.ASPECT_JSON_FLIP {path} has {whole.num_aspects} aspects per image but DATASET.ASPECT_JSON "
            f"has {training_whole.num_aspects}; score the mirrored images with the same questions "
            "(stage 2 --views flip)"
        )
    source = SelectedQuestions.of(whole, cfg.DATASET.QUESTIONS_USED)
    view = (whole.file.sidecar or {}).get("view")
    if view not in (None, "hflip"):
        raise ConfigError(f"DATASET.ASPECT_JSON_FLIP {path}: its sidecar says view {view!r}, not 'hflip'")
    if cfg.MaKD.TARGETS != "teacher":
        logger.warning("DATASET.ASPECT_JSON_FLIP is ignored with MaKD.TARGETS %s (a control)", cfg.MaKD.TARGETS)
        return None, ""
    rows = join_aspects(train, whole.table, "error", role="training")[1]
    return (rows if source is whole else rows[:, source.columns]), source.path


def _described(source: TargetSource | None) -> list[dict]:
    """One entry per training target file: the file itself, or each part of DATASET.ASPECT_SOURCES."""
    if source is None:
        return []
    described = source.describe()
    return described["sources"] if "sources" in described else [described]


def _warn_if_test_crops_borders(cfg, test: ImageIndex) -> None:
    """Small images (<= IMAGE_SIZE) with RESIZE_RATIO > 1 lose their borders at test time; say so once."""
    d = cfg.DATASET
    if d.RESIZE_RATIO <= 1.0 or not len(test):
        return
    message = border_crop_warning(d.IMAGE_SIZE, d.RESIZE_RATIO, min(test.load(0).size))
    if message:
        logger.warning(message)


def build_data(cfg) -> DataBundle:
    """Train / validation / test AspectDatasets of `cfg` (see the module docstring for the order)."""
    d = cfg.DATASET
    train, test = build_image_indexes(cfg)
    num_classes = check_num_classes(cfg, train)
    if test.class_names != train.class_names:
        raise ConfigError(f"{test.source} and {train.source} name their classes differently; fix the data")
    train_all, val = train, None
    if d.VAL_FRACTION > 0:
        kept, held = stratified_split(train.ids, train.labels, d.VAL_FRACTION, d.VAL_SEED)
        if not held:
            raise ConfigError(f"DATASET.VAL_FRACTION {d.VAL_FRACTION} holds out no image of {train.source}; raise it")
        train, val = train.subset(kept), train.subset(held)

    num_aspects, source, test_file = 0, None, None
    train_targets = val_targets = test_targets = flipped = None
    flip_path = ""
    dropped: list[str] = []
    if uses_aspects(cfg):
        source = training_source(cfg, list(train.class_names))
        num_aspects = source.num_aspects
        if d.MISSING_ASPECTS == "error":
            join_targets(source, train_all, "error")  # validation images are training images: all need rows
        joined, teacher = join_targets(source, train, d.MISSING_ASPECTS)
        if len(joined) < len(train):
            kept_ids = set(joined.ids)
            dropped = [i for i in train.ids if i not in kept_ids]
            logger.warning(
                "dropped %d training images without a row in %s (first: %s)",
                len(dropped),
                source.path,
                ", ".join(dropped[:3]),
            )
        train = joined
        train_targets = make_targets(cfg.MaKD.TARGETS, teacher, train.labels, cfg.SEED)
        flipped, flip_path = _flipped_rows(cfg, train, source)
        if val is not None:
            val_targets = join_targets(source, val, "nan", role="validation")[1]  # teacher rows, for metrics
        test_targets, test_file = _test_targets(cfg, test, source)

    _warn_if_test_crops_borders(cfg, test)
    if d.CACHE_IMAGES:  # the cache pass decodes every image: it is the image check
        train, val, test = cache_splits([train, val, test], shorter_side_size(d.IMAGE_SIZE, d.RESIZE_RATIO))
    elif d.CHECK_IMAGES:
        start = time.perf_counter()
        checked = check_images([train, val, test], num_workers=worker_count(d.NUM_WORKERS))
        logger.info("checked %d images in %.1f s", checked, time.perf_counter() - start)
    eval_tf = test_transform(image_size=d.IMAGE_SIZE, resize_ratio=d.RESIZE_RATIO)
    on_device = DevicePreprocess.from_cfg(cfg)  # uint8 batches -> normalised float, erasing, mixing
    bound = cfg.MaKD.MIN_CROP_AREA if num_aspects and cfg.MaKD.SMALL_CROP == "bound" else 0.0
    spec = AugmentSpec.from_cfg(cfg, min_scale=bound)
    columns = source.aspect_columns() if source is not None else None
    views = view_policy_from_cfg(cfg, num_aspects, columns) if num_aspects else None
    mixer = BatchMixer.from_cfg(cfg, num_classes)
    strong = spec.strong(cfg) if distiller_of(cfg).needs_strong_view else None  # two-view methods (MLKD)
    recipe = {
        "augment": spec.describe(),
        "batch_mixing": mixer.describe() if mixer else None,
        "views": views.describe(flip_path) if views else None,
    }
    if strong is not None:
        recipe["strong_view"] = strong.describe()
    return DataBundle(
        train=AspectDataset(
            train,
            train_transform(image_size=d.IMAGE_SIZE, spec=spec),
            train_targets,
            num_aspects,
            seed=cfg.SEED,
            views=views,
            flipped_targets=flipped,
            collate_fn=mixer,
            preprocess=on_device,
            strong_transform=train_transform(image_size=d.IMAGE_SIZE, spec=strong) if strong is not None else None,
        ),
        val=None if val is None else AspectDataset(val, eval_tf, val_targets, num_aspects, preprocess=on_device),
        test=AspectDataset(test, eval_tf, test_targets, num_aspects, preprocess=on_device),
        class_names=list(train.class_names),
        num_classes=num_classes,
        num_aspects=num_aspects,
        aspect_path=source.path if source else "",
        aspect_sha256=source.sha256 if source else "",
        dropped_ids=dropped,
        test_aspect_path=test_file.path if test_file else "",
        test_aspect_sha256=test_file.sha256 if test_file else "",
        recipe=recipe,
        aspect_sources=_described(source),
        aspect_columns=columns,
    )


def evaluation_view(dataset: AspectDataset, cfg) -> AspectDataset:
    """`dataset` (e.g. the training split) with the evaluation transform instead of its own.

    Scoring a training split with its random crop + flip gives a different number on every call.
    The view shares the images (and a cache), labels and stored targets; it has no view policy or mixing.
    """
    d = cfg.DATASET
    return dataset.with_transform(test_transform(image_size=d.IMAGE_SIZE, resize_ratio=d.RESIZE_RATIO))
