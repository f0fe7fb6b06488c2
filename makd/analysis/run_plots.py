"""The figures of finished run folders (tools/plot.py, tools/study.py): what to read from each run, where to draw."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from makd.analysis.plots import agreement_bars, question_heatmaps, training_curves, tsne_embedding, tsne_panels
from makd.analysis.run_folders import RunFolderError, read_config
from makd.analysis.run_health import folder_findings, label_suffix
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


def is_finished(run_dir: Path) -> bool:
    """A run is finished when its folder holds summary.json (and student.pth, written just before it)."""
    return (run_dir / "summary.json").exists() and (run_dir / "student.pth").exists()


def progress_label(run_dir: Path, label: str, epochs_done: int) -> str:
    """`label`, with "(unfinished: 3 of 10 epochs)" for a run still training or stopped (curves of either)."""
    if is_finished(run_dir):
        return label
    planned = read_config(run_dir / "config.yaml").get("SOLVER.EPOCHS", "?")
    return f"{label} (unfinished: {epochs_done} of {planned} epochs)"


def plot_curves(
    run_dirs: Sequence[Path], labels: Sequence[str], out_dir: Path, log: Callable[[str], None] = print
) -> Path | None:
    """Curves of every run with a finished epoch (an unfinished run's so far, marked in its label); None when no run
    has one yet."""
    histories = {}
    for label, run_dir in zip(labels, run_dirs):
        if not (run_dir / "metrics.jsonl").exists():
            log(f"[plot] {label}: no epoch finished yet (no metrics.jsonl); no curves")
            continue
        rows = read_history(run_dir)
        histories[progress_label(run_dir, label, len(rows))] = rows
    if not histories:
        return None
    path = out_dir / "training_curves.png"
    training_curves(histories, path)
    return path


def plot_tsne(run_dirs: Sequence[Path], labels: Sequence[str], out_dir: Path, seed: int = 0) -> Path:
    """t-SNE of each run's penultimate features on its test split, side by side (finished runs: student.pth)."""
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


def plot_aspects(run_dir: Path, label: str, out_dir: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Question heatmaps of the run's training aspect file (the teacher alone: any run whose config names one, a
    baseline or an unfinished run too) and, for a finished run with an aspect head, the agreement bars of its
    aspect_metrics.json (computed from student.pth, and not saved, when the run folder has none)."""
    run = load_run(run_dir, need_student=False)
    train = teacher_split(run, "train")
    if train is None:
        raise RunFolderError(
            f"{run_dir}: its config names no aspect file (DATASET.ASPECT_JSON or DATASET.ASPECT_SOURCES); "
            "no aspect plots"
        )
    columns = teacher_columns(run)
    paths = list(
        question_heatmaps(
            train.targets.numpy(),
            train.labels,
            run.data.class_names,
            column_questions(run, columns),
            out_dir,
            title=f"{label}, {Path(run.cfg.DATASET.ASPECT_JSON).name or 'DATASET.ASPECT_SOURCES'}",
            question_labels=columns.labels() if columns is not None else None,
        ).values()
    )
    if run.student is None:
        log(f"[plot] {label}: not finished (no student.pth): the teacher's plots only (question correlation, "
            "class means)")  # fmt: skip
        return paths
    if not run.num_aspects:
        log(f"[plot] {label}: no aspect head ({run.cfg.DISTILLER.TYPE}): the teacher's plots only (question "
            "correlation, class means), no agreement bars")  # fmt: skip
        return paths
    metrics_path = run_dir / "aspect_metrics.json"
    if metrics_path.exists():
        splits = json.loads(metrics_path.read_text(encoding="utf-8"))["splits"]
    else:  # computed for the figure only: a plot never writes into the run folder (tools/plot.py)
        splits = compute_aspect_metrics(run, write=False)
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
    """Draw the asked figures into `out_dir`: curves of every run (an unfinished one's so far), t-SNE of `tsne_runs`
    (default the first two; finished runs only), aspect plots of `aspect_run` (default the first run with an aspect
    head, else the first whose config names an aspect file: the teacher's plots alone)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # a run with training-health findings says so in every legend and title it appears in
    labels = [label + label_suffix(folder_findings(run_dir)) for label, run_dir in zip(labels, run_dirs)]
    paths: list[Path] = []
    if "curves" in what:
        curves = plot_curves(run_dirs, labels, out_dir, log)
        paths += [curves] if curves else []
    if "tsne" in what:
        chosen = list(tsne_runs) if tsne_runs is not None else list(range(min(2, len(run_dirs))))
        unfinished = [labels[i] for i in chosen if not is_finished(run_dirs[i])]
        chosen = [i for i in chosen if is_finished(run_dirs[i])]
        if unfinished:
            log(f"[plot] t-SNE leaves out {', '.join(unfinished)}: not finished (no student.pth)")
        if chosen:
            paths.append(plot_tsne([run_dirs[i] for i in chosen], [labels[i] for i in chosen], out_dir))
    if "aspects" in what:
        index = aspect_run if aspect_run is not None else _aspect_run(run_dirs)
        if index is None:
            log("[plot] no run names an aspect file (DATASET.ASPECT_JSON or DATASET.ASPECT_SOURCES); aspect plots "
                "skipped")  # fmt: skip
        else:
            paths += plot_aspects(run_dirs[index], labels[index], out_dir, log)
    for path in paths:
        log(f"[plot] wrote {path} (+ numbers beside it)")
    return paths


def _aspect_run(run_dirs: Sequence[Path]) -> int | None:
    """The first finished run with an aspect head, else the first run whose config names an aspect file."""
    for i, run_dir in enumerate(run_dirs):
        summary = run_dir / "summary.json"
        if summary.exists() and json.loads(summary.read_text(encoding="utf-8")).get("num_aspects"):
            return i
    for i, run_dir in enumerate(run_dirs):
        config = read_config(run_dir / "config.yaml")
        if config.get("DATASET.ASPECT_JSON") or config.get("DATASET.ASPECT_SOURCES"):
            return i
    return None
