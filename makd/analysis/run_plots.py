"""The figures of finished run folders (tools/plot.py, tools/study.py): what to read from each run, where to draw."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from makd.analysis.plots import agreement_bars, question_heatmaps, training_curves, tsne_embedding, tsne_panels
from makd.analysis.run_folders import RunFolderError
from makd.analysis.run_inference import (
    column_questions,
    compute_aspect_metrics,
    load_run,
    predict,
    teacher_columns,
    teacher_split,
)


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of <run_dir>/metrics.jsonl (one per finished epoch)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise RunFolderError(f"{run_dir} holds no metrics.jsonl; it is not a run folder of tools/our_train.py")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunFolderError(f"{path}:{number} is not a JSON line") from None
    return rows


def plot_curves(run_dirs: Sequence[Path], labels: Sequence[str], out_dir: Path) -> Path:
    path = out_dir / "training_curves.png"
    training_curves({label: read_history(d) for label, d in zip(labels, run_dirs)}, path)
    return path


def plot_tsne(run_dirs: Sequence[Path], labels: Sequence[str], out_dir: Path, seed: int = 0) -> Path:
    """t-SNE of each run's penultimate features on its test split, side by side."""
    panels, class_names = [], None
    for label, run_dir in zip(labels, run_dirs):
        run = load_run(run_dir)
        out = predict(run, run.data.test)
        top1 = 100.0 * float((out["class_logits"].argmax(axis=1) == out["labels"]).mean())
        panels.append((f"{label} (test top-1 {top1:.1f} %)", tsne_embedding(out["features"], seed), out["labels"]))
        class_names = class_names or run.data.class_names
    path = out_dir / "tsne_test.png"
    tsne_panels(panels, class_names, path)
    return path


def plot_aspects(run_dir: Path, label: str, out_dir: Path) -> list[Path]:
    """Question heatmaps of the run's training aspect file and agreement bars of its aspect_metrics.json (computed
    from student.pth when the run folder has none)."""
    run = load_run(run_dir)
    train = teacher_split(run, "train")
    if train is None:
        raise RunFolderError(f"{run_dir}: its config names no aspect file (DATASET.ASPECT_JSON); no aspect plots")
    columns = teacher_columns(run)
    paths = list(
        question_heatmaps(
            train.targets.numpy(),
            train.labels,
            run.data.class_names,
            column_questions(run, columns),
            out_dir,
            title=Path(run.cfg.DATASET.ASPECT_JSON).name or "DATASET.ASPECT_SOURCES",
            question_labels=columns.labels() if columns is not None else None,
        ).values()
    )
    metrics_path = run_dir / "aspect_metrics.json"
    if metrics_path.exists():
        splits = json.loads(metrics_path.read_text(encoding="utf-8"))["splits"]
    else:
        splits = compute_aspect_metrics(run)
    for split, metrics in splits.items():
        if any("student_auc" in e for e in metrics["questions"]):
            path = out_dir / f"aspect_agreement_{split}.png"
            agreement_bars(metrics, path, title=f"{label}, {split} split")
            paths.append(path)
    return paths


def draw_all(
    run_dirs: Sequence[Path],
    labels: Sequence[str],
    out_dir: Path,
    what: Sequence[str] = ("curves", "tsne", "aspects"),
    tsne_runs: Sequence[int] | None = None,
    aspect_run: int | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Draw the asked figures into `out_dir`: curves of every run, t-SNE of `tsne_runs` (default the first two),
    aspect plots of `aspect_run` (default the first run with an aspect head)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if "curves" in what:
        paths.append(plot_curves(run_dirs, labels, out_dir))
    if "tsne" in what:
        chosen = list(tsne_runs) if tsne_runs is not None else list(range(min(2, len(run_dirs))))
        paths.append(plot_tsne([run_dirs[i] for i in chosen], [labels[i] for i in chosen], out_dir))
    if "aspects" in what:
        index = aspect_run if aspect_run is not None else _first_with_aspect_head(run_dirs)
        if index is None:
            log("[plot] no run has an aspect head; aspect plots skipped")
        else:
            paths += plot_aspects(run_dirs[index], labels[index], out_dir)
    for path in paths:
        log(f"[plot] wrote {path} (+ numbers beside it)")
    return paths


def _first_with_aspect_head(run_dirs: Sequence[Path]) -> int | None:
    for i, run_dir in enumerate(run_dirs):
        summary = run_dir / "summary.json"
        if summary.exists() and json.loads(summary.read_text(encoding="utf-8")).get("num_aspects"):
            return i
    return None
