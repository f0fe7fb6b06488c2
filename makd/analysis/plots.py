"""The figures (matplotlib, Agg backend): every PNG is written next to a JSON/CSV file with the numbers it shows.

- training_curves: loss terms, top-1 (train / val / test) and learning rate per epoch of one or several runs;
- tsne_panels: 2-D t-SNE maps of penultimate features side by side, coloured by class (the paper's Figure 4);
- question_heatmaps: correlation of the teacher's answers between questions, and the mean answer per class;
- agreement_bars: per question, the student head's AUC and MAE against the teacher, and the question's
  mutual information with the label.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from makd.analysis.aspect_metrics import entry_label, json_safe
from makd.atomic_files import atomic_write, atomic_write_json, atomic_write_text

LABEL_CHARS = 48  # question texts are cut to this many characters on an axis (the JSON keeps them whole)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (servers, CI)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()))


def _short(text: str | None, label: str) -> str:
    """ "q3 Is it red?" (the text cut to LABEL_CHARS), or the label alone."""
    if not text:
        return label
    text = text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"
    return f"{label} {text}"


# ------------------------------------------------------------------------------------------- training curves

TOP1_SERIES = (("train_top1", "-", "train"), ("val_top1", "-.", "val"), ("test_top1", "--", "test"))
MAP_SERIES = (("val_map", "-.", "val"), ("test_map", "--", "test"))  # detection runs (TASK detection)
# The middle panel: the first of these whose test key some run's rows hold.
METRIC_PANELS = (
    (TOP1_SERIES, "top-1 accuracy", "top-1 (%)"),
    (MAP_SERIES, "COCO mAP (IoU 0.50:0.95)", "mAP (%)"),
)


def _metric_panel(histories: Mapping[str, Sequence[dict]]) -> tuple:
    for panel in METRIC_PANELS:
        test_key = panel[0][-1][0]
        if any(test_key in row for rows in histories.values() for row in rows):
            return panel
    return METRIC_PANELS[0]


def training_curves(histories: Mapping[str, Sequence[dict]], path: str | os.PathLike) -> dict[str, Any]:
    """Curves of metrics.jsonl rows for each run label: losses, top-1 (mAP for detection runs), lr; PNG at `path`,
    numbers at .json beside it.

    Each run gets one colour; line styles tell the loss terms (train_loss = total, train_loss_<name> = terms) and
    the splits apart.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    numbers: dict[str, dict[str, list]] = {}
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    colours = plt.get_cmap("tab10")
    loss_styles = ["-", "--", ":", "-."]
    metric_series, metric_title, metric_unit = _metric_panel(histories)
    for r, (label, rows) in enumerate(histories.items()):
        colour = colours(r % 10)
        series: dict[str, list] = {}
        loss_keys = [k for k in rows[0] if k == "train_loss" or k.startswith("train_loss_")] if rows else []
        for key in loss_keys + [k for k, _, _ in metric_series] + ["lr"]:
            points = [[row["epoch"], row[key]] for row in rows if isinstance(row.get(key), (int, float))]
            if points:
                series[key] = points
        numbers[label] = series
        weights = rows[-1].get("loss_weights") or {} if rows else {}  # what each plotted term is multiplied by
        for k, key in enumerate(loss_keys):
            if key in series:
                name = "total" if key == "train_loss" else key[len("train_loss_") :]
                name += f" (x{weights[name]:g})" if isinstance(weights.get(name), (int, float)) else ""
                x, y = zip(*series[key])
                axes[0].plot(x, y, loss_styles[k % 4], color=colour, label=f"{label}: {name}")
        for key, style, name in metric_series:
            if key in series:
                x, y = zip(*series[key])
                axes[1].plot(
                    x,
                    y,
                    style,
                    color=colour,
                    marker="o" if len(x) < 15 else None,
                    markersize=3,
                    label=f"{label}: {name}",
                )
        if "lr" in series:
            x, y = zip(*series["lr"])
            axes[2].plot(x, y, color=colour, label=label)
    for ax, title, ylabel in zip(
        axes, ("training losses", metric_title, "learning rate (first step of each epoch)"), ("loss", metric_unit, "lr")
    ):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, ncol=1 + len(ax.lines) // 12)
    _save(fig, path)
    atomic_write_json(path.with_suffix(".json"), json_safe(numbers))
    return numbers


# ------------------------------------------------------------------------------------------------- t-SNE


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """[N, D] -> [N, 2] with scikit-learn's Barnes-Hut t-SNE (PCA init, fixed seed)."""
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float64)
    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def tsne_panels(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]], class_names: Sequence[str], path: str | os.PathLike
) -> None:
    """Side-by-side scatter plots of (title, coordinates [N, 2], labels [N]); CSV of the points beside the PNG."""
    plt = _pyplot()
    path = Path(path)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 2.2, 6), squeeze=False)
    cmap = plt.get_cmap("tab20" if len(class_names) > 10 else "tab10")
    for ax, (title, coords, labels) in zip(axes[0], panels):
        labels = np.asarray(labels)
        for c, name in enumerate(class_names):
            mask = labels == c
            if mask.any():
                ax.scatter(
                    coords[mask, 0], coords[mask, 1], s=9, color=cmap(c % cmap.N), label=name, alpha=0.8, linewidths=0
                )
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(class_names) <= 40:
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="center right", fontsize=8, markerscale=2, frameon=False)
        fig.subplots_adjust(right=0.86)
    _save(fig, path)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("panel", "index", "label", "class", "x", "y"))
    for title, coords, labels in panels:
        for i, (label, (x, y)) in enumerate(zip(np.asarray(labels), coords)):
            writer.writerow((title, i, int(label), class_names[int(label)], f"{x:.5f}", f"{y:.5f}"))
    atomic_write_text(path.with_suffix(".csv"), out.getvalue())


# ------------------------------------------------------------------------------------------ question heatmaps


def answer_correlation(aspects: np.ndarray) -> np.ndarray:
    """Pearson correlation [Q, Q] between questions over images (NaN for a question answered the same everywhere)."""
    aspects = np.asarray(aspects, dtype=np.float64)
    centred = aspects - aspects.mean(axis=0)
    norms = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred.T @ centred) / np.outer(norms, norms)
    corr[norms == 0, :] = np.nan
    corr[:, norms == 0] = np.nan
    return corr


def class_mean_answers(aspects: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean P(yes) per class and question [C, Q] (NaN for a class without images)."""
    aspects, labels = np.asarray(aspects, dtype=np.float64), np.asarray(labels)
    means = np.full((num_classes, aspects.shape[1]), np.nan)
    for c in range(num_classes):
        if (labels == c).any():
            means[c] = aspects[labels == c].mean(axis=0)
    return means


def question_heatmaps(
    aspects: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    questions: Sequence[str] | None,
    out_dir: str | os.PathLike,
    title: str = "",
    question_labels: Sequence[str] | None = None,
) -> dict[str, Path]:
    """question_correlation.png and class_mean_answers.png (+ .json each) from aspect rows [N, Q] with labels [N];
    `question_labels` name the columns ("q1", ...; default: column i is question i + 1)."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    rows = np.isfinite(aspects).all(axis=1)
    aspects, labels = np.asarray(aspects)[rows], np.asarray(labels)[rows]
    q = aspects.shape[1]
    ticks = list(question_labels) if question_labels is not None else [f"q{i + 1}" for i in range(q)]
    names = [_short(questions[i] if questions else None, ticks[i]) for i in range(q)]
    corr = answer_correlation(aspects)
    side = max(6.0, 0.32 * q + 4)
    fig, ax = plt.subplots(figsize=(side + 3, side))
    image = ax.imshow(np.ma.masked_invalid(corr), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(q), ticks, rotation=90, fontsize=7)
    ax.set_yticks(range(q), names if q <= 30 else ticks, fontsize=7)
    ax.set_title(
        f"correlation of the teacher's P(yes) between questions{': ' + title if title else ''}\n"
        f"({len(aspects)} images; grey = constant answer)",
        fontsize=10,
    )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="Pearson r")
    paths = {"correlation": out_dir / "question_correlation.png"}
    _save(fig, paths["correlation"])
    atomic_write_json(
        paths["correlation"].with_suffix(".json"),
        json_safe({"labels": ticks, "questions": list(questions or []), "num_images": int(len(aspects)),
                   "correlation": corr.tolist()}),  # fmt: skip
    )
    means = class_mean_answers(aspects, labels, len(class_names))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.32 * q + 4), max(4.0, 0.28 * len(class_names) + 2.5)))
    image = ax.imshow(np.ma.masked_invalid(means), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(q), ticks, rotation=90, fontsize=7)
    ax.set_yticks(
        range(len(class_names)), class_names if len(class_names) <= 60 else [""] * len(class_names), fontsize=7
    )
    ax.set_xlabel("question (texts in class_mean_answers.json)")
    ax.set_title(f"mean teacher P(yes) per class{': ' + title if title else ''}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="mean P(yes)")
    paths["class_mean"] = out_dir / "class_mean_answers.png"
    _save(fig, paths["class_mean"])
    atomic_write_json(
        paths["class_mean"].with_suffix(".json"),
        json_safe({"labels": ticks, "questions": list(questions or []), "classes": list(class_names),
                   "class_mean": means.tolist()}),  # fmt: skip
    )
    return paths


# --------------------------------------------------------------------------------------------- agreement bars


def _missing_label(entry: dict[str, Any], key: str, metrics: dict[str, Any]) -> str:
    """Why a bar is missing: for the AUC, the teacher's yes / no counts when they are below the minimum."""
    yes, no = entry.get("teacher_yes_images"), entry.get("teacher_no_images")
    if key == "student_auc" and yes is not None and no is not None:
        return f"left out: {yes} yes / {no} no (< {metrics.get('auc_min_count', '?')} a side)"
    return "n/a"


def _auc_scope(metrics: dict[str, Any]) -> str:
    """ " (12 of 20 questions, >= 10 a side)": which questions the mean AUC is over."""
    scored = metrics.get("student_auc_questions")
    if scored is None:
        return ""
    return f" ({scored} of {len(metrics['questions'])} questions, >= {metrics.get('auc_min_count')} a side)"


def agreement_bars(metrics: dict[str, Any], path: str | os.PathLike, title: str = "") -> None:
    """Per-question bars from one split of aspect_metrics.json: student AUC, student MAE, I(answer; class) bits. A
    question without an AUC (fewer teacher yes or no answers than the minimum) gets a red note with its counts."""
    plt = _pyplot()
    path = Path(path)
    entries = metrics["questions"]
    q = len(entries)
    names = [_short(e.get("question"), entry_label(e)) for e in entries]
    panels = [
        ("student_auc", "AUC of the student head\n(teacher answer = P(yes) >= 0.5)", (0.0, 1.0), 0.5),
        ("student_mae", "MAE |student - teacher|", None, None),
        ("mutual_information_bits", "I(teacher answer; class) (bits)", None, None),
    ]
    panels = [p for p in panels if any(e.get(p[0]) is not None for e in entries)]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 3.5, max(4.0, 0.3 * q + 1.5)), sharey=True, squeeze=False
    )
    y = np.arange(q)
    for ax, (key, label, limits, reference) in zip(axes[0], panels):
        values = np.array([np.nan if e.get(key) is None else e[key] for e in entries], dtype=float)
        ax.barh(y, np.nan_to_num(values), color="tab:blue" if key != "mutual_information_bits" else "tab:green")
        for i in np.flatnonzero(np.isnan(values)):
            ax.text(0.01, i, _missing_label(entries[i], key, metrics), va="center", fontsize=6, color="tab:red",
                    transform=ax.get_yaxis_transform())  # fmt: skip
        if limits:
            ax.set_xlim(*limits)
        if reference is not None:
            ax.axvline(reference, color="grey", linestyle="--", linewidth=1)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, names, fontsize=7)
    axes[0][0].invert_yaxis()
    mean = metrics.get("mean", {})
    summary = ", ".join(
        f"{k} {v:.3f}" + (_auc_scope(metrics) if k == "student_auc" else "")
        for k, v in mean.items()
        if isinstance(v, float) and math.isfinite(v) and k in ("student_auc", "student_mae", "mutual_information_bits")
    )
    fig.suptitle(
        f"per-question teacher vs student{': ' + title if title else ''} ({metrics['num_images']} images; "
        f"means: {summary})",
        fontsize=10,
        y=1.02,  # above the panels' two-line titles (the PNG is cropped to what is drawn)
    )
    _save(fig, path)
    atomic_write_json(path.with_suffix(".json"), json_safe(metrics))


# ------------------------------------------------------------------------------------------- confusion matrix

ANNOTATED_CLASSES = 25  # up to this many classes each cell shows its count


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str) -> None:
    """A [C, C] confusion matrix (row = true class) as a PNG: each row divided by its images (the share of the class
    predicted as each column's class), the counts written in the cells for up to ANNOTATED_CLASSES classes."""
    plt = _pyplot()
    confusion = np.asarray(confusion, dtype=np.float64)
    c = len(class_names)
    totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, totals, out=np.full_like(confusion, np.nan), where=totals > 0)
    side = max(5.0, 0.32 * c + 3)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(np.ma.masked_invalid(shares), cmap="Blues", vmin=0, vmax=1)
    names = list(class_names) if c <= 60 else [""] * c
    ax.set_xticks(range(c), names, rotation=90, fontsize=7)
    ax.set_yticks(range(c), names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if c <= ANNOTATED_CLASSES:
        for t in range(c):
            for p in range(c):
                if confusion[t, p]:
                    dark = shares[t, p] > 0.6
                    ax.text(p, t, f"{int(confusion[t, p])}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")  # fmt: skip
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's images")
    _save(fig, Path(path))
