"""TASK detection for the one trainer: COCO-format data, the Faster R-CNN student, COCO mAP each evaluation.

Run files besides the trainer's: detections_test.json (the final model's test detections as COCO results, which
pycocotools' COCOeval scores to the same numbers) and category_ap.json (per-category AP of the final model).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import makd
from makd.atomic_files import atomic_write_json
from makd.data.build import training_source
from makd.data.image_check import bad_images_error
from makd.data.views import view_policy_from_cfg
from makd.detection.coco_eval import coco_map, detections_to_coco
from makd.detection.data import DetectionDataset, apply_control, join_rows, validation_carve
from makd.detection.model import DetectorSettings, build_detector
from makd.engine import run_folder
from makd.engine.checkpoint import save_checkpoint
from makd.engine.distributed import DistInfo, all_gather_arrays
from makd.engine.evaluate import make_eval_loader
from makd.engine.metrics import aspect_agreement
from makd.engine.tasks import TASKS, Task, move_to
from makd.engine.train_state import finite_number
from makd.engine.trainer import best_epochs
from makd.errors import ConfigError
from makd.formats.aspect_files import AspectTable, read_aspect_file
from makd.formats.coco import CocoSet, box_rows_source_problem, check_same_categories, read_coco, read_instances
from makd.formats.files import read_sidecar
from makd.formats.image_decode import ImageLoadError


def settings_from_config(cfg) -> DetectorSettings:
    d = cfg.DETECTION
    return DetectorSettings(
        min_size=d.MIN_SIZE,
        max_size=d.MAX_SIZE,
        fpn_channels=d.FPN_CHANNELS,
        returned_stages=tuple(d.RETURNED_STAGES),
        anchor_sizes=tuple(d.ANCHOR_SIZES),
        box_head_dim=d.BOX_HEAD_DIM,
        rpn_batch_per_image=d.RPN_BATCH_PER_IMAGE,
        rpn_pre_nms_train=d.RPN_PRE_NMS_TRAIN,
        rpn_post_nms_train=d.RPN_POST_NMS_TRAIN,
        rpn_pre_nms_test=d.RPN_PRE_NMS_TEST,
        rpn_post_nms_test=d.RPN_POST_NMS_TEST,
        box_batch_per_image=d.BOX_BATCH_PER_IMAGE,
        score_thresh=d.SCORE_THRESH,
        detections_per_image=d.DETECTIONS_PER_IMAGE,
        image_mean=tuple(cfg.DATASET.MEAN),
        image_std=tuple(cfg.DATASET.STD),
    )


class DetectorTraining(nn.Module):
    """The trained module of the detection task: `.student` is the detector; forward(batch) -> (counts, losses)."""

    loss_weight_keys = {"loss_aspect": "MaKD.ALPHA", "loss_image_aspect": "MaKD.ALPHA"}  # for the health checks

    def __init__(self, detector: nn.Module, alpha: float = 1.0) -> None:
        super().__init__()
        self.student = detector
        self.alpha = alpha  # MaKD.ALPHA, which the detector's aspect terms carry (torchvision's own terms: none)

    def set_epoch(self, epoch: int) -> None:
        """Nothing depends on the epoch (the trainer's contract)."""

    def loss_weights(self) -> dict[str, tuple[float, str]]:
        """As a distiller's (makd.distillers.base): only the aspect terms are weighted, by MaKD.ALPHA."""
        return {name: (self.alpha, key) for name, key in self.loss_weight_keys.items()}

    def forward(self, batch: dict) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
        """({"positive_samples": positive proposals the box head trained on}, {loss name: scalar})."""
        losses = self.student(batch["images"], batch["targets"])
        return {"positive_samples": self.student.roi_heads.positive_samples}, losses


def _check_decodable(coco) -> None:
    """Every image decodes and has its JSON size, before the first epoch (DATASET.CHECK_IMAGES)."""
    problems = []
    for image in coco.images:
        try:
            coco.read_image(image.id)
        except ImageLoadError as err:
            problems.append(str(err))
    if problems:
        raise bad_images_error(problems, len(coco.images))


def _restricted_instances(path: str, coco: CocoSet) -> dict[str, Any]:
    """The instances file at `path` keeping only `coco`'s images and their annotations: the validation carve's
    ground truth, so each evaluation indexes a few thousand boxes rather than the whole training file (COCO
    train2017: ~860k annotations)."""
    instances = read_instances(path)
    keep = {image.id for image in coco.images}
    return {
        **instances,
        "images": [image for image in instances["images"] if image["id"] in keep],
        "annotations": [a for a in instances["annotations"] if a["image_id"] in keep],
    }


@TASKS.register("detection")
class DetectionTask(Task):
    name = "detection"
    metric = "map"
    finite_keys = ("map", "map50", "map75")
    summary_line_keys = ("test_map_last", "test_map50_last", "test_map75_last", "test_map_best", "best_epoch")
    eval_collate = staticmethod(DetectionDataset.collate_fn)

    def build(self) -> None:
        cfg = self.cfg
        level = cfg.DETECTION.ASPECT_LEVEL
        self.train_coco = read_coco(cfg.DETECTION.TRAIN_JSON, cfg.DATASET.TRAIN_IMAGE_PATH)
        self.test_coco = read_coco(cfg.DETECTION.TEST_JSON, cfg.DATASET.TEST_IMAGE_PATH)
        # the labels 1..K would mean different categories in training and evaluation
        check_same_categories(self.train_coco, self.test_coco, "DETECTION.TRAIN_JSON", "DETECTION.TEST_JSON")
        if cfg.DATASET.CHECK_IMAGES:
            _check_decodable(self.train_coco)
            _check_decodable(self.test_coco)
        self.val_coco = None
        if cfg.DATASET.VAL_FRACTION > 0:  # model selection on held-out training images, not on the test split
            self.train_coco, self.val_coco = validation_carve(
                self.train_coco, cfg.DATASET.VAL_FRACTION, cfg.DATASET.VAL_SEED
            )
        self.uses_aspects = cfg.DISTILLER.TYPE == "MaKD"
        table = _training_table(cfg) if self.uses_aspects else None
        if table is not None:
            train_json = cfg.DETECTION.TRAIN_JSON
            self._check_box_rows_source(table.path, train_json, "DATASET.ASPECT_JSON", "DETECTION.TRAIN_JSON")
        self.num_aspects = table.num_aspects if table is not None else 0
        self.table = table
        rows = join_rows(self.train_coco, table, level, self.num_aspects, "training")
        if rows.num_missing and self.info.is_main:
            what = "boxes" if level == "box" else "images"
            print(
                f"[makd] warning: {rows.num_missing} training {what} have no row in {table.path} (first: "
                f"{', '.join(rows.missing_examples)}); they train the detector but not the aspect outputs",
                file=sys.stderr,
                flush=True,
            )
        self.train_rows = apply_control(self.train_coco, rows, level, cfg.MaKD.TARGETS, cfg.SEED)
        test_table = None
        if self.uses_aspects and cfg.DATASET.TEST_ASPECT_JSON:
            test_table = read_aspect_file(cfg.DATASET.TEST_ASPECT_JSON, expected_aspects=self.num_aspects)
            self._check_box_rows_source(
                test_table.path, cfg.DETECTION.TEST_JSON, "DATASET.TEST_ASPECT_JSON", "DETECTION.TEST_JSON"
            )
        self.test_rows = join_rows(self.test_coco, test_table, level, self.num_aspects, "test")
        policy = view_policy_from_cfg(cfg, self.num_aspects) if self.num_aspects else None
        self.view_policy = policy
        self.train_set = DetectionDataset(
            self.train_coco, self.train_rows, hflip_prob=cfg.DETECTION.HFLIP_PROB, seed=cfg.SEED, policy=policy
        )
        self.eval_sets = {"test": DetectionDataset(self.test_coco, self.test_rows)}
        if self.val_coco is not None:  # the teacher's own rows (no control), for the aspect agreement
            val_rows = join_rows(self.val_coco, table, level, self.num_aspects, "validation")
            self.eval_sets["val"] = DetectionDataset(self.val_coco, val_rows)
        self.model = DetectorTraining(
            build_detector(
                cfg.DISTILLER.STUDENT,
                self.train_coco.num_classes,
                self.num_aspects,
                aspect_level=level,
                settings=settings_from_config(cfg),
                pretrained_path=cfg.DISTILLER.STUDENT_PRETRAINED,
                alpha=cfg.MaKD.ALPHA,
                temperature=cfg.MaKD.TEMPERATURE,
            ),
            alpha=cfg.MaKD.ALPHA,
        ).to(self.device)
        self.instances = {"test": read_instances(cfg.DETECTION.TEST_JSON)}
        if self.val_coco is not None:
            self.instances["val"] = _restricted_instances(cfg.DETECTION.TRAIN_JSON, self.val_coco)
        self.metadata = {
            "task": "detection",
            "num_classes": self.train_coco.num_classes,
            "num_aspects": self.num_aspects,
            "aspect_level": level,
            "student": cfg.DISTILLER.STUDENT,
            "distiller": cfg.DISTILLER.TYPE,
            "class_names": self.train_coco.label_names[1:],
            "category_ids": [c.id for c in self.train_coco.categories],
        }
        self.last_evaluation: dict[str, dict] = {}

    def batch_counts(self, outputs, batch) -> tuple[int, None]:
        return len(batch["images"]), None

    # --- training health (makd.engine.health) ------------------------------------------------------------------
    own_losses = ("loss_box_reg", "loss_objectness", "loss_rpn_box_reg")  # the detector's own terms

    def class_terms(self) -> tuple[str, ...]:
        return ("loss_classifier",)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.model.student.backbone.parameters())  # the FPN backbone: every term reaches it

    def health_counts(self, outputs, batch) -> dict[str, float]:
        return {
            "positive_samples": float(outputs["positive_samples"]),
            "gt_boxes": float(sum(len(target["boxes"]) for target in batch["targets"])),
            "images": float(len(batch["images"])),
        }

    def evaluate(self, split: str, loader) -> dict[str, float]:
        """COCO mAP / mAP@50 / mAP@75 (%) of the split, and the box (or image) aspect agreement with the teacher.

        Each process scores its share; detections and aspect pairs are gathered, so every rank computes the same
        numbers from the whole split.
        """
        return self._evaluate(split, loader, self.info)

    @torch.inference_mode()
    def _evaluate(self, split: str, loader, info: DistInfo) -> dict[str, float]:
        detector = self.model.student
        was_training = detector.training
        detector.eval()
        category_ids = self.metadata["category_ids"]
        level = self.cfg.DETECTION.ASPECT_LEVEL
        detections, predicted, teacher, seen = [], [], [], 0
        for batch in loader:
            batch = move_to(batch, self.device)
            outputs = detector(batch["images"], batch["targets"])
            for image_id, output, target in zip(batch["image_ids"], outputs, batch["targets"]):
                seen += 1
                detections += detections_to_coco(
                    image_id,
                    output["boxes"].float().cpu().numpy(),
                    output["scores"].float().cpu().numpy(),
                    output["labels"].cpu().numpy(),
                    category_ids,
                )
                if level == "box" and "gt_box_aspects" in output:
                    pairs = (output["gt_box_aspects"].cpu().numpy(), target["aspects"].cpu().numpy())
                elif level == "image" and "image_aspects" in output:
                    pairs = (output["image_aspects"].cpu().numpy()[None], target["image_aspects"].cpu().numpy()[None])
                else:
                    continue
                rows = np.isfinite(pairs[1]).all(axis=1)
                predicted.append(pairs[0][rows])
                teacher.append(pairs[1][rows])
        detector.train(was_training)
        gathered = all_gather_arrays((detections, predicted, teacher, seen), info)
        detections = [d for part in gathered for d in part[0]]
        result: dict[str, Any] = coco_map(
            self.instances[split], detections, image_ids=[i.id for i in loader.dataset.coco.images]
        )
        self.last_evaluation[split] = {"detections": detections, "category_ap": result.pop("category_ap")}
        result["num_samples"] = sum(part[3] for part in gathered)
        pred = [a for part in gathered for a in part[1]]
        truth = [a for part in gathered for a in part[2]]
        if pred and sum(len(a) for a in pred):
            result.update(aspect_agreement(np.concatenate(pred), np.concatenate(truth)))
        return result

    def describe(self) -> str:
        cfg, train = self.cfg, self.train_coco
        aspects = f"{self.num_aspects} aspects per {cfg.DETECTION.ASPECT_LEVEL}" if self.num_aspects else "0 aspects"
        return (
            f"detection: {train.num_classes} categories, {aspects} | train {len(train.images)} images "
            f"{len(train.box_ids())} boxes"
            + (f", val {len(self.val_coco.images)} images" if self.val_coco is not None else "")
            + f", test {len(self.test_coco.images)} images | {cfg.DISTILLER.STUDENT} "
            f"Faster R-CNN {cfg.DISTILLER.TYPE}"
        )

    def epoch_parts(self, row: dict) -> list[str]:
        parts = []
        if "val_map" in row:
            parts.append(f"val mAP {row['val_map']:.2f}")
        if "test_map" in row:
            parts.append(f"test mAP {row['test_map']:.2f} @50 {row['test_map50']:.2f} @75 {row['test_map75']:.2f}")
        if "test_aspect_mae" in row:
            parts.append(f"aspect mae {row['test_aspect_mae']:.3f} auc {row['test_aspect_auc']:.3f}")
        return parts

    def finish(self, run_dir: Path, logger, step: int) -> None:
        """The final model's test detections (COCO results) and per-category AP, in the run folder."""
        if "test" not in self.last_evaluation:  # resumed after the last epoch: evaluate once more, here alone
            alone = DistInfo()  # only the main process finishes: no other rank would join a gather
            loader = make_eval_loader(
                self.eval_sets["test"], self.cfg.DATASET.TEST.BATCH_SIZE, 0, alone, False, self.eval_collate
            )
            self._evaluate("test", loader, alone)
        last = self.last_evaluation["test"]
        atomic_write_json(run_dir / run_folder.DETECTIONS, last["detections"])
        atomic_write_json(run_dir / run_folder.CATEGORY_AP, {"test": last["category_ap"]})

    def summary(self, history: list[dict], train_seconds: float) -> dict[str, Any]:
        cfg = self.cfg
        last = [row for row in history if "test_map" in row][-1]
        rows = self.train_rows
        summary = {
            "task": "detection",
            "test_map_last": last["test_map"],
            "test_map50_last": last["test_map50"],
            "test_map75_last": last["test_map75"],
            **best_epochs(history, self.metric, self.finite_keys),
            "epochs": cfg.SOLVER.EPOCHS,
            "num_classes": self.train_coco.num_classes,
            "num_aspects": self.num_aspects,
            "aspect_level": cfg.DETECTION.ASPECT_LEVEL if self.num_aspects else None,
            "hflip_prob": cfg.DETECTION.HFLIP_PROB,
            "view_policy": self.view_policy.describe() if self.view_policy and cfg.DETECTION.HFLIP_PROB else None,
            "student": cfg.DISTILLER.STUDENT,
            "distiller": cfg.DISTILLER.TYPE,
            "targets": cfg.MaKD.TARGETS if self.num_aspects else None,
            "seed": cfg.SEED,
            "aspect_file": self.table.path if self.table is not None else None,
            "aspect_sha256": self.table.sha256 if self.table is not None else None,
            "num_train_images": len(self.train_coco.images),
            "num_train_boxes": len(self.train_coco.box_ids()),
            "supervised_train_rows": rows.num_supervised if self.num_aspects else 0,
            "unsupervised_train_rows": rows.num_missing if self.num_aspects else 0,
            "num_val_images": len(self.val_coco.images) if self.val_coco is not None else 0,
            "num_test_images": len(self.test_coco.images),
            "world_size": self.info.world_size,
            "train_seconds": train_seconds,
            "makd_version": makd.__version__,
        }
        for key in ("test_aspect_mae", "test_aspect_auc"):
            if key in last:
                summary[f"{key}_last"] = last[key] if finite_number(last[key]) else None
        return summary

    def _check_box_rows_source(self, aspect_path: str, instances_json: str, key: str, instances_key: str) -> None:
        """A per-box aspect file made from another instances file is refused (makd.formats.coco); one that cannot be
        checked is a warning."""
        if self.cfg.DETECTION.ASPECT_LEVEL != "box":
            return
        warning = box_rows_source_problem(aspect_path, read_sidecar(aspect_path), instances_json, key, instances_key)
        if warning and self.info.is_main:
            print(f"[makd] warning: {warning}", file=sys.stderr, flush=True)

    def export(self, path: Path) -> None:
        save_checkpoint(path, {"model": self.model.student.state_dict(), **self.metadata, "config": self.cfg.dump()})


def _training_table(cfg) -> AspectTable:
    """DATASET.ASPECT_JSON as rows keyed by box id (or image id), checked as in classification."""
    if cfg.DATASET.ASPECT_SOURCES:
        raise ConfigError(
            "DATASET.ASPECT_SOURCES is not read with TASK detection; set DATASET.ASPECT_JSON to one file of rows "
            "per box (stage 2 --boxes) or per image"
        )
    if cfg.DATASET.QUESTIONS_USED:
        raise ConfigError(
            f"DATASET.QUESTIONS_USED {cfg.DATASET.QUESTIONS_USED!r} is not read with TASK detection (its per-box rows "
            "are used whole); set it to '' or run stage 2 --boxes with the questions you want"
        )
    return training_source(cfg, [], kinds=("per_image",)).table
