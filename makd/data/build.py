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

from makd.artifacts import (
    ArtifactError,
    AspectTable,
    questions_text,
    read_aspect_file,
    read_questions,
    read_sidecar,
    sha256_file,
    sha256_text,
    sidecar_path,
)
from makd.config.defaults import ConfigError, uses_aspects
from makd.data.aspect_targets import join_aspects, make_targets
from makd.data.batch_mixing import BatchMixer
from makd.data.datasets import AspectDataset
from makd.data.device_batch import DevicePreprocess
from makd.data.image_cache import cache_splits
from makd.data.image_check import bad_images_error, check_images, image_problem
from makd.data.image_index import ImageIndex, build_image_indexes
from makd.data.loader_settings import worker_count
from makd.data.splits import stratified_split
from makd.data.transforms import AugmentSpec, border_crop_warning, shorter_side_size, test_transform, train_transform
from makd.data.views import view_policy_from_cfg

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


def read_training_aspects(cfg) -> AspectTable:
    """DATASET.ASPECT_JSON, checked against MaKD.ASPECT_NUM and (when set) DATASET.QUESTIONS."""
    path = cfg.DATASET.ASPECT_JSON
    if not path:
        raise ConfigError(
            f"DATASET.ASPECT_JSON is empty; DISTILLER.TYPE {cfg.DISTILLER.TYPE} needs the stage-2 aspect file "
            "(set it, or use DISTILLER.TYPE NONE for the baseline)"
        )
    table = read_aspect_file(path)
    if cfg.MaKD.ASPECT_NUM not in (0, table.num_aspects):  # 0 = take Q from the file
        raise ConfigError(
            f"MaKD.ASPECT_NUM is {cfg.MaKD.ASPECT_NUM} but {path} has {table.num_aspects} aspects per image; "
            f"set MaKD.ASPECT_NUM {table.num_aspects}"
        )
    if cfg.DATASET.QUESTIONS:
        check_questions(cfg.DATASET.QUESTIONS, table)
    return table


def recorded_questions_sha256(meta: dict | None) -> str:
    """The questions sha256 an aspect file's sidecar records ("questions_sha256", or "questions": {"sha256"})."""
    if not meta:
        return ""
    nested = meta.get("questions")
    if isinstance(nested, dict) and nested.get("sha256"):
        return str(nested["sha256"])
    return str(meta.get("questions_sha256") or "")


def check_questions(questions_path: str, table: AspectTable) -> None:
    """The questions file holds Q questions and, when the sidecar says which file it was, is that file."""
    questions = read_questions(questions_path)
    if len(questions) != table.num_aspects:
        raise ConfigError(
            f"DATASET.QUESTIONS {questions_path} holds {len(questions)} questions but {table.path} has "
            f"{table.num_aspects} aspects per image; point DATASET.QUESTIONS at the file stage 2 answered"
        )
    meta = read_sidecar(table.path)
    recorded = recorded_questions_sha256(meta)
    normalised = sha256_text(questions_text(questions))
    actual = {sha256_file(questions_path), normalised}  # raw bytes or normalised lines
    if recorded and recorded not in actual:
        raise ConfigError(
            f"DATASET.QUESTIONS {questions_path} (sha256 {normalised[:12]}) is not the questions file {table.path} "
            f"was made from (its sidecar {sidecar_path(table.path).name} records sha256 {recorded[:12]}); point "
            "DATASET.QUESTIONS at that file, or re-run stage 2 with the edited questions"
        )
    listed = meta.get("questions") if isinstance(meta, dict) else None
    if not recorded and isinstance(listed, list) and [str(q).strip() for q in listed] != questions:
        raise ConfigError(
            f"DATASET.QUESTIONS {questions_path} differs from the questions listed in {sidecar_path(table.path)}; "
            "point DATASET.QUESTIONS at the file stage 2 answered, or re-run stage 2 with the edited questions"
        )


# How many images without an aspect row are decoded to tell a bad file from a missing row.
_BLAME_CHECK_LIMIT = 64


def _join_blaming_bad_images(index: ImageIndex, table: AspectTable, missing: str) -> tuple[ImageIndex, np.ndarray]:
    """join_aspects, except that when rows are missing and one of those images is not a readable image,
    the error says what is wrong with that file (a text file named .png is not a missing row)."""
    try:
        return join_aspects(index, table, missing)
    except ArtifactError:
        row_of = table.index()
        absent = [p for p, i in enumerate(index.ids) if i not in row_of][:_BLAME_CHECK_LIMIT]
        if index.paths is not None:
            problems = [m for m in (image_problem(index.paths[p]) for p in absent) if m]
            if problems:
                raise bad_images_error(problems, len(absent)) from None
        raise


def _test_targets(cfg, test: ImageIndex, num_aspects: int) -> tuple[np.ndarray | None, AspectTable | None]:
    """Test rows only from DATASET.TEST_ASPECT_JSON: release train and test folders reuse ids like cat_0_1."""
    if not cfg.DATASET.TEST_ASPECT_JSON:
        return None, None
    table = read_aspect_file(cfg.DATASET.TEST_ASPECT_JSON)
    if table.num_aspects != num_aspects:
        raise ConfigError(
            f"DATASET.TEST_ASPECT_JSON {table.path} has {table.num_aspects} aspects per image but "
            f"DATASET.ASPECT_JSON has {num_aspects}; use the test file made with the same questions"
        )
    return join_aspects(test, table, "nan", role="test")[1], table


def _flipped_rows(cfg, train: ImageIndex, num_aspects: int) -> tuple[np.ndarray | None, str]:
    """DATASET.ASPECT_JSON_FLIP rows (the teacher's answers for the mirrored images) in train order."""
    path = cfg.DATASET.ASPECT_JSON_FLIP
    if not path:
        return None, ""
    table = read_aspect_file(path)
    if table.num_aspects != num_aspects:
        raise ConfigError(
            f"DATASET.ASPECT_JSON_FLIP {path} has {table.num_aspects} aspects per image but DATASET.ASPECT_JSON "
            f"has {num_aspects}; score the mirrored images with the same questions (stage 2 --views flip)"
        )
    view = (read_sidecar(path) or {}).get("view")
    if view not in (None, "hflip"):
        raise ConfigError(f"DATASET.ASPECT_JSON_FLIP {path}: its sidecar says view {view!r}, not 'hflip'")
    if cfg.MaKD.TARGETS != "teacher":
        logger.warning("DATASET.ASPECT_JSON_FLIP is ignored with MaKD.TARGETS %s (a control)", cfg.MaKD.TARGETS)
        return None, ""
    return join_aspects(train, table, "error", role="training")[1], table.path


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

    num_aspects, table, test_table = 0, None, None
    train_targets = val_targets = test_targets = flipped = None
    flip_path = ""
    dropped: list[str] = []
    if uses_aspects(cfg):
        table = read_training_aspects(cfg)
        num_aspects = table.num_aspects
        if d.MISSING_ASPECTS == "error":
            _join_blaming_bad_images(train_all, table, "error")  # validation images are training images: all need rows
        joined, teacher = _join_blaming_bad_images(train, table, d.MISSING_ASPECTS)
        if len(joined) < len(train):
            kept_ids = set(joined.ids)
            dropped = [i for i in train.ids if i not in kept_ids]
            logger.warning(
                "dropped %d training images without a row in %s (first: %s)",
                len(dropped),
                table.path,
                ", ".join(dropped[:3]),
            )
        train = joined
        train_targets = make_targets(cfg.MaKD.TARGETS, teacher, train.labels, cfg.SEED)
        flipped, flip_path = _flipped_rows(cfg, train, num_aspects)
        if val is not None:
            val_targets = join_aspects(val, table, "nan", role="validation")[1]  # teacher rows, for metrics
        test_targets, test_table = _test_targets(cfg, test, num_aspects)

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
    views = view_policy_from_cfg(cfg, num_aspects) if num_aspects else None
    mixer = BatchMixer.from_cfg(cfg, num_classes)
    recipe = {
        "augment": spec.describe(),
        "batch_mixing": mixer.describe() if mixer else None,
        "views": views.describe(flip_path) if views else None,
    }
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
        ),
        val=None if val is None else AspectDataset(val, eval_tf, val_targets, num_aspects, preprocess=on_device),
        test=AspectDataset(test, eval_tf, test_targets, num_aspects, preprocess=on_device),
        class_names=list(train.class_names),
        num_classes=num_classes,
        num_aspects=num_aspects,
        aspect_path=table.path if table else "",
        aspect_sha256=table.sha256 if table else "",
        dropped_ids=dropped,
        test_aspect_path=test_table.path if test_table else "",
        test_aspect_sha256=test_table.sha256 if test_table else "",
        recipe=recipe,
    )


def evaluation_view(dataset: AspectDataset, cfg) -> AspectDataset:
    """`dataset` (e.g. the training split) with the evaluation transform instead of its own.

    Scoring a training split with its random crop + flip gives a different number on every call.
    The view shares the images (and a cache), labels and stored targets; it has no view policy or mixing.
    """
    d = cfg.DATASET
    return dataset.with_transform(test_transform(image_size=d.IMAGE_SIZE, resize_ratio=d.RESIZE_RATIO))
