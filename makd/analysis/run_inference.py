"""Read a finished run back: its config, data and exported student (student.pth), and the student's outputs on a
split (class logits, aspect-head probabilities, penultimate features), for plots and aspect metrics after training."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from makd.analysis.aspect_metrics import aspect_metrics, write_aspect_metrics
from makd.analysis.run_folders import RunFolderError
from makd.config import load_cfg
from makd.data.build import (
    DataBundle,
    build_data,
    has_training_targets,
    join_targets,
    open_test_source,
    training_source,
)
from makd.data.datasets import AspectDataset
from makd.data.device_batch import prepare_batch
from makd.engine import run_folder
from makd.engine.checkpoint import load_checkpoint, student_state_dict
from makd.formats.question_numbers import AspectColumns
from makd.formats.questions import read_questions
from makd.formats.target_sources import TargetSource
from makd.models import build_student, input_family_of
from makd.models.heads import classifier_layer


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: object
    data: DataBundle
    student: torch.nn.Module | None  # eval mode, CPU; None for an unfinished run read without it
    num_classes: int
    num_aspects: int  # width of the student's aspect head (0 for the CE baseline)
    _teacher: TargetSource | None = None  # the training targets' source, opened once (teacher_source)


def load_run(run_dir: str | os.PathLike, need_student: bool = True) -> LoadedRun:
    """The run's resolved config, its data (paths as recorded, relative to the current folder) and its student;
    without `need_student`, an unfinished run (no student.pth) is read with `student` None (its teacher's plots)."""
    run_dir = Path(run_dir)
    weights_path = run_dir / "student.pth"
    if not weights_path.exists() and need_student:
        raise RunFolderError(f"{run_dir} holds no student.pth: the run has not finished")
    cfg = load_cfg(str(run_dir / "config.yaml"), ["DATASET.NUM_WORKERS", "0"])
    data = build_data(cfg)
    if not weights_path.exists():
        return LoadedRun(run_dir, cfg, data, None, data.num_classes, 0)
    state = load_checkpoint(weights_path, map_location="cpu")
    num_classes, num_aspects = int(state["num_classes"]), int(state.get("num_aspects", 0))
    student = build_student(state["student"], num_classes + num_aspects, input_family=input_family_of(cfg))
    student.load_state_dict(student_state_dict(state))
    return LoadedRun(run_dir, cfg, data, student.eval(), num_classes, num_aspects)


@torch.no_grad()
def predict(run: LoadedRun, dataset: AspectDataset, batch_size: int = 256) -> dict[str, np.ndarray]:
    """The student on every image of `dataset`, in order: features [N, D] (the classifier's input), class logits
    [N, C], aspect probabilities [N, Q] (sigmoid of the aspect logits; Q = 0 for the baseline), labels [N],
    teacher [N, Q_dataset] (the dataset's aspect rows; NaN where missing)."""
    head = classifier_layer(run.student)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0].detach().flatten(1)))
    outputs, labels, teacher = [], [], []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
            outputs.append(run.student(prepare_batch(batch, dataset, torch.device("cpu"))["image"]).float())
            labels.append(batch["label"])
            teacher.append(batch["aspects"].float())
    finally:
        hook.remove()
    logits = torch.cat(outputs).numpy()
    return {
        "features": torch.cat(captured).float().numpy(),
        "class_logits": logits[:, : run.num_classes],
        "aspect_prob": 1.0 / (1.0 + np.exp(-logits[:, run.num_classes :].astype(np.float64))),
        "labels": torch.cat(labels).numpy(),
        "teacher": torch.cat(teacher).numpy(),
    }


def teacher_source(run: LoadedRun) -> TargetSource | None:
    """The run's training target source (DATASET.ASPECT_JSON or ASPECT_SOURCES, with DATASET.QUESTIONS_USED), opened
    once; None when the config names none. A baseline run that names one has it too: its teacher-only plots."""
    if run._teacher is None and has_training_targets(run.cfg):
        run._teacher = training_source(run.cfg, list(run.data.train.index.class_names))
    return run._teacher


def teacher_columns(run: LoadedRun) -> AspectColumns | None:
    """Which question (by its number in the questions file) each teacher column answers; None without targets."""
    if run.data.aspect_columns is not None:
        return run.data.aspect_columns
    source = teacher_source(run)
    return source.aspect_columns() if source is not None else None


def column_questions(run: LoadedRun, columns: AspectColumns | None) -> list[str] | None:
    """The text of each column's question (DATASET.QUESTIONS), or None when the run names no questions file."""
    if columns is None or not run.cfg.DATASET.QUESTIONS:
        return None
    texts = read_questions(run.cfg.DATASET.QUESTIONS)
    return [texts[q] for q in columns.questions] if len(texts) == columns.num_questions else None


def teacher_split(run: LoadedRun, split: str) -> AspectDataset | None:
    """The split's images with the teacher's rows (never the run's training targets, which may be a control such as
    random) and the evaluation transform; None when the split has no teacher rows."""
    eval_transform = run.data.test.transform
    if split == "test":
        if run.data.test.targets is not None:
            return run.data.test
        index = run.data.test.index
        source = open_test_source(run.cfg, list(index.class_names), teacher_source(run))
        if source is None:
            return None
        rows = join_targets(source, index, "nan", "test")[1]
        return AspectDataset(index, eval_transform, rows, preprocess=run.data.test.preprocess)
    source = teacher_source(run)
    if source is None:
        return None
    index = run.data.train.index
    return AspectDataset(
        index, eval_transform, join_targets(source, index, "nan")[1], preprocess=run.data.test.preprocess
    )


def compute_aspect_metrics(run: LoadedRun, write: bool = True) -> dict[str, dict]:
    """aspect_metrics for the train split and (with test rows) the test split; written to
    <run_dir>/aspect_metrics.json when `write`. Student columns only when the student has an aspect head."""
    columns = teacher_columns(run)
    questions = column_questions(run, columns)
    splits = {}
    for split in ("train", "test"):
        dataset = teacher_split(run, split)
        if dataset is None:
            continue
        out = predict(run, dataset)
        student = out["aspect_prob"] if run.num_aspects == out["teacher"].shape[1] else None
        splits[split] = aspect_metrics(
            out["teacher"], student, out["labels"], run.num_classes, questions, columns=columns
        )
    if not splits:
        raise RunFolderError(f"{run.run_dir}: its config names no aspect file (DATASET.ASPECT_JSON); nothing to score")
    if write:
        write_aspect_metrics(run.run_dir / run_folder.ASPECT_METRICS, splits, source="student.pth after training")
    return splits
