"""The classification task of the trainer: image datasets, a student and its distiller, top-1 / top-5 evaluation.

The CNN teacher of the KD family is built from the config here (makd.models.teacher loads and checks it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import makd
from makd.analysis.aspect_metrics import aspect_scalars
from makd.analysis.run_inference import LoadedRun, compute_aspect_metrics
from makd.config.defaults import distiller_of, uses_teacher
from makd.data.build import build_data, evaluation_view, has_training_targets
from makd.data.device_batch import prepare_batch
from makd.distillers import build_distiller
from makd.engine import run_folder
from makd.engine.checkpoint import save_checkpoint
from makd.engine.evaluate import evaluate
from makd.engine.health import label_entropy
from makd.engine.tasks import TASKS, Task
from makd.engine.train_state import finite_number
from makd.engine.trainer import best_epochs
from makd.errors import MakdError, one_line
from makd.formats.files import sha256_file
from makd.models import build_student, input_family_of
from makd.models.heads import classifier_layer
from makd.models.teacher import ClassLogitsTeacher, TeacherError, load_teacher


@TASKS.register("classification")
class ClassificationTask(Task):
    name = "classification"
    metric = "top1"
    # An evaluation is good when these are finite; aspect AUC may be NaN legitimately (an aspect with one answer).
    finite_keys = ("top1", "top5", "loss")
    summary_line_keys = ("test_top1_last", "test_top1_best", "best_epoch", "test_top5_last")

    def build(self) -> None:
        cfg = self.cfg
        data = self.data = build_data(cfg)
        method = distiller_of(cfg)  # the registered method declares what it needs and its head width
        self.num_aspects = data.num_aspects if method.needs_aspects else 0
        student = build_student(
            cfg.DISTILLER.STUDENT,
            method.head_outputs(data.num_classes, self.num_aspects),
            pretrained_path=cfg.DISTILLER.STUDENT_PRETRAINED,
            input_family=input_family_of(cfg),  # mdistiller's CIFAR or ImageNet table, as the data
        )
        self.teacher = teacher_from_config(cfg, data.num_classes, data.class_names)
        self.model = build_distiller(
            cfg, student, data.num_classes, self.num_aspects, self.teacher, data.class_names, data.train.labels
        ).to(self.device)
        if cfg.DATASET.CHANNELS_LAST:  # the device step hands it channels_last images (makd/data/device_batch.py)
            self.model.student.to(memory_format=torch.channels_last)
        if cfg.SOLVER.COMPILE:
            self.model.student.compile()
        self.train_set = data.train
        self.eval_sets = {"test": data.test}
        if data.val is not None:
            self.eval_sets["val"] = data.val
        self.metadata = {
            "num_classes": data.num_classes,
            "num_aspects": self.num_aspects,
            "student": cfg.DISTILLER.STUDENT,
            "distiller": cfg.DISTILLER.TYPE,
            "class_names": data.class_names,
        }
        self.teacher_top1 = None

    def prepare(self, eval_loaders: dict) -> None:
        if self.teacher is None:
            return
        # measured once per process start (deterministic: frozen teacher, eval view)
        distiller, data, cfg = self.model, self.data, self.cfg
        self.teacher_top1 = evaluate(distiller.teacher, eval_loaders["test"], data.num_classes, self.device, self.info)[
            "top1"
        ]
        if cfg.DISTILLER.TEACHER_PRECOMPUTE:
            # the training images on the test-time view (no augmentation), in index order
            distiller.set_precomputed_teacher_logits(
                precompute_teacher_logits(
                    distiller.teacher, evaluation_view(data.train, cfg), cfg.DATASET.TEST.BATCH_SIZE, self.device
                )
            )

    def batch_to_device(self, batch, dataset):
        return prepare_batch(batch, dataset, self.device)  # uint8 -> normalised, erased, mixed floats

    def batch_counts(self, outputs, batch) -> tuple[int, int]:
        labels = batch.get("label_index", batch["label"])  # "label" is [B, C] under smoothing / mixup
        return labels.numel(), int((outputs.argmax(dim=1) == labels).sum())

    def evaluate(self, split: str, loader) -> dict[str, float]:
        return evaluate(self.model.student, loader, self.data.num_classes, self.device, self.info)

    def describe(self) -> str:
        data, cfg = self.data, self.cfg
        return (
            f"{data.num_classes} classes, {self.num_aspects} aspects | train {len(data.train)} "
            f"val {len(data.val) if data.val is not None else 0} test {len(data.test)} | {cfg.DISTILLER.STUDENT} "
            f"{cfg.DISTILLER.TYPE}"
        )

    def epoch_parts(self, row: dict) -> list[str]:
        parts = [f"train top1 (augmented) {row['train_top1']:.2f}"]
        for split in ("val", "test"):
            if f"{split}_top1" in row:
                parts.append(f"{split} top1 {row[f'{split}_top1']:.2f} top5 {row[f'{split}_top5']:.2f}")
        if "test_aspect_mae" in row:
            parts.append(f"aspect mae {row['test_aspect_mae']:.3f} auc {row['test_aspect_auc']:.3f}")
        return parts

    def finish(self, run_dir: Path, logger, step: int) -> None:
        """Per-question metrics of the final student against the teacher's rows (train split on the evaluation
        view; test too when it has rows): aspect_metrics.json in the run folder and `<split>_aspect/...` in
        TensorBoard."""
        if not has_training_targets(self.cfg):
            return
        data = self.data
        run = LoadedRun(run_dir, self.cfg, data, self.model.student.eval(), data.num_classes, self.num_aspects)
        try:
            splits = compute_aspect_metrics(run)
        except MakdError as err:
            if self.num_aspects:  # a MaKD run read the file at start: a failure here is a real one
                raise
            # A run without an aspect head (the CE baseline) never needed the file its config names (a starting
            # config names stage 2's output before stage 2 ran): the trained student is kept, without the metrics.
            print(f"[makd] note: no {run_folder.ASPECT_METRICS} for this run without an aspect head: "
                  f"{one_line(str(err))}", file=sys.stderr, flush=True)  # fmt: skip
            return
        for split, metrics in splits.items():
            logger.step(step, aspect_scalars(metrics, split))

    def summary(self, history: list[dict], train_seconds: float) -> dict[str, Any]:
        cfg, data = self.cfg, self.data
        last = [row for row in history if "test_top1" in row][-1]
        summary = {
            "test_top1_last": last["test_top1"],
            "test_top5_last": last["test_top5"],
            **best_epochs(history, self.metric, self.finite_keys),
            "epochs": cfg.SOLVER.EPOCHS,
            "num_classes": data.num_classes,
            "num_aspects": data.num_aspects,
            "student": cfg.DISTILLER.STUDENT,
            "distiller": cfg.DISTILLER.TYPE,
            "targets": cfg.MaKD.TARGETS if data.num_aspects else None,
            "seed": cfg.SEED,
            "aspect_file": data.aspect_path or None,
            "aspect_sha256": data.aspect_sha256 or None,
            "aspect_sources": data.aspect_sources or None,  # kind, path, sha256, sidecar (and questions) of each file
            # the questions trained on (DATASET.QUESTIONS_USED; None = every question of the file)
            "questions_used": (cfg.DATASET.QUESTIONS_USED or None) if data.num_aspects else None,
            "num_train_images": len(data.train),
            "num_val_images": len(data.val) if data.val is not None else 0,
            "num_test_images": len(data.test),
            "dropped_train_images": len(data.dropped_ids),
            "recipe": data.recipe,
            "world_size": self.info.world_size,
            "train_seconds": train_seconds,
            "makd_version": makd.__version__,
        }
        if cfg.DISTILLER.TYPE.startswith("LaViD") and cfg.LaViD.CLASS_TARGETS:
            # LaViD reads its per-class teacher file itself; named here so a report can find the teacher's cost
            summary["class_targets_file"] = cfg.LaViD.CLASS_TARGETS
            summary["class_targets_sha256"] = sha256_file(cfg.LaViD.CLASS_TARGETS)
        for key in ("test_aspect_mae", "test_aspect_auc"):
            if key in last:
                summary[f"{key}_last"] = last[key] if finite_number(last[key]) else None
        if self.teacher_top1 is not None:
            summary["teacher_test_top1"] = self.teacher_top1
        return summary

    # --- training health (makd.engine.health) ------------------------------------------------------------------
    def class_terms(self) -> tuple[str, ...]:
        return self.model.class_terms  # the method's (makd.distillers.base.Distiller.class_terms)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The student without its classifier Linear (whose class rows only CE reaches, its aspect rows only MaKD's
        BCE); a method's own heads (LaViD's) are outside the student."""
        head = {id(p) for p in classifier_layer(self.model.student).parameters()}
        return [p for p in self.model.student.parameters() if id(p) not in head]

    def health_counts(self, outputs, batch) -> dict[str, float]:
        size, right = self.batch_counts(outputs, batch)
        # unweighted, whatever the method's CE weight: KD's 0.1 x CE would never look like ln C
        class_loss = F.cross_entropy(outputs.detach().float(), batch["label"], reduction="sum")
        return {"class_loss": float(class_loss), "correct": float(right), "samples": float(size)}

    def chance_levels(self) -> dict[str, float]:
        if getattr(self, "_chance", None) is None:
            labels = torch.as_tensor(self.data.train.labels)
            counts = torch.bincount(labels, minlength=self.data.num_classes).tolist()
            self._chance = {
                "class_loss": label_entropy(counts),
                "largest_share": max(counts) / sum(counts),
                "num_classes": float(self.data.num_classes),
            }
        return self._chance

    def export(self, path: Path) -> None:
        data, cfg = self.data, self.cfg
        save_checkpoint(
            path,
            {
                "model": self.model.student.state_dict(),
                "student": cfg.DISTILLER.STUDENT,
                "num_outputs": data.num_classes + data.num_aspects,
                "num_classes": data.num_classes,
                "num_aspects": data.num_aspects,
                "class_names": data.class_names,
                "config": cfg.dump(),
            },
        )


# ----------------------------------------------------------------------------- the CNN teacher of the KD family
def teacher_from_config(cfg, num_classes: int, class_names: list[str] | None = None) -> ClassLogitsTeacher | None:
    """The configured CNN teacher, or None when DISTILLER.TYPE needs none (DISTILLER.TEACHER is then recorded only)."""
    if not uses_teacher(cfg):
        return None
    if not cfg.DISTILLER.TEACHER_CHECKPOINT:
        raise TeacherError(
            f"DISTILLER.TYPE {cfg.DISTILLER.TYPE} needs a CNN teacher: set DISTILLER.TEACHER (its architecture) "
            "and DISTILLER.TEACHER_CHECKPOINT (its weights; train it with DISTILLER.TYPE NONE, see docs/methods.md)"
        )
    return load_teacher(
        cfg.DISTILLER.TEACHER,
        cfg.DISTILLER.TEACHER_CHECKPOINT,
        num_classes,
        cfg.DATASET.IMAGE_SIZE,
        class_names,
        input_family_of(cfg),  # a CIFAR config's ResNet50 teacher is mdistiller's 32-px net, as for students
    )


@torch.no_grad()
def precompute_teacher_logits(
    teacher: nn.Module, dataset, batch_size: int, device: torch.device, num_workers: int = 0
) -> torch.Tensor:
    """Teacher logits [N, C] (float32, on `device`) of every item of `dataset`, in index order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, drop_last=False)
    rows = [teacher(prepare_batch(batch, dataset, device)["image"]).float() for batch in loader]
    return torch.cat(rows)
