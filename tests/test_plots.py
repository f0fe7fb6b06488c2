"""Figures and the numbers beside them, and reading a finished run back (student.pth features, aspect metrics)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tool_modules import load_tool

from makd.analysis.plots import (
    agreement_bars,
    answer_correlation,
    class_mean_answers,
    training_curves,
    tsne_panels,
)
from makd.analysis.run_inference import compute_aspect_metrics, load_run, predict
from makd.models.heads import classifier_layer

REPO = Path(__file__).resolve().parents[1]


our_train, plot_tool = load_tool("our_train"), load_tool("plot")


def assert_png(path: Path, min_side: int = 300) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= min_side, image.size


@pytest.fixture
def finished_run(release_dataset):
    """A 2-epoch MaKD run of the tiny release dataset, with test aspect rows."""
    out = release_dataset["root"] / "run"
    assert (
        our_train.main(
            [
                str(release_dataset["config"]),
                "OUTPUT_DIR",
                str(out),
                "SOLVER.EPOCHS",
                "2",
                "DATASET.IMAGE_SIZE",
                "32",
                "DATASET.RESIZE_RATIO",
                "1.0",
                "DATASET.TEST_ASPECT_JSON",
                str(release_dataset["test_aspects"]),
            ]
        )
        == 0
    )
    return out


def test_training_curves_json_holds_the_plotted_numbers(tmp_path):
    rows = [
        {
            "epoch": 1,
            "lr": 0.1,
            "train_loss": 3.0,
            "train_loss_ce": 2.0,
            "train_loss_aspect": 1.0,
            "train_top1": 20.0,
            "test_top1": 25.0,
        },
        {
            "epoch": 2,
            "lr": 0.05,
            "train_loss": 2.0,
            "train_loss_ce": 1.5,
            "train_loss_aspect": 0.5,
            "train_top1": 40.0,
            "test_top1": 35.0,
            "val_top1": 33.0,
        },
    ]
    training_curves({"a": rows, "b": rows[:1]}, tmp_path / "curves.png")
    numbers = json.loads((tmp_path / "curves.json").read_text())
    assert numbers["a"]["train_loss_aspect"] == [[1, 1.0], [2, 0.5]]
    assert numbers["a"]["val_top1"] == [[2, 33.0]] and numbers["b"]["lr"] == [[1, 0.1]]
    assert_png(tmp_path / "curves.png")


def test_question_matrices_by_hand():
    aspects = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
    corr = answer_correlation(aspects)
    assert corr[0, 1] == pytest.approx(-1.0) and corr[0, 0] == pytest.approx(1.0)
    assert np.isnan(corr[2]).all() and np.isnan(corr[:, 2]).all()  # a constant answer has no correlation
    means = class_mean_answers(np.array([[0.2, 1.0], [0.4, 0.0], [0.9, 0.5]]), np.array([0, 0, 2]), 3)
    np.testing.assert_allclose(means[0], [0.3, 0.5])
    assert np.isnan(means[1]).all()
    np.testing.assert_allclose(means[2], [0.9, 0.5])


def test_tsne_csv_and_agreement_json(tmp_path):
    coords = np.array([[0.0, 1.0], [2.0, 3.0]])
    tsne_panels(
        [("base", coords, np.array([0, 1])), ("makd", coords + 1, np.array([1, 0]))],
        ["cat", "dog"],
        tmp_path / "tsne.png",
    )
    rows = list(csv.DictReader((tmp_path / "tsne.csv").open()))
    assert [(r["panel"], r["class"], float(r["x"])) for r in rows] == [
        ("base", "cat", 0.0),
        ("base", "dog", 2.0),
        ("makd", "dog", 1.0),
        ("makd", "cat", 3.0),
    ]
    metrics = {  # an aspect_metrics.json split as written before numbers were 1-based (a 0-based "index")
        "num_images": 4,
        "questions": [
            {
                "index": 0,
                "question": "Is it red?",
                "student_auc": 0.75,
                "student_mae": 0.1,
                "mutual_information_bits": 1.0,
            },
            {
                "index": 1,
                "question": "Is it big?",
                "student_auc": None,
                "student_mae": 0.2,
                "mutual_information_bits": 0.0,
            },
        ],
        "mean": {"student_auc": 0.75},
    }
    agreement_bars(metrics, tmp_path / "bars.png", title="t")
    assert json.loads((tmp_path / "bars.json").read_text()) == metrics
    assert_png(tmp_path / "bars.png")


def test_features_from_the_head_hook_and_aspect_metrics_match_the_trainer(finished_run):
    run = load_run(finished_run)
    out = predict(run, run.data.test)
    head = classifier_layer(run.student)
    with torch.no_grad():
        logits = head(torch.from_numpy(out["features"]))[:, : run.num_classes].numpy()
    np.testing.assert_allclose(logits, out["class_logits"], rtol=1e-4, atol=1e-4)  # the hook saw the head's input
    assert out["features"].shape == (12, head.in_features)
    splits = compute_aspect_metrics(run)
    last = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()][-1]
    # The trainer's test aspect MAE / AUC are the means over questions of the per-question values.
    assert splits["test"]["mean"]["student_mae"] == pytest.approx(last["test_aspect_mae"], abs=1e-5)
    # (12 test images: questions with fewer than 10 yes or 10 no answers have no AUC, in both alike; metrics.jsonl
    # writes a mean over none as null)
    auc, logged = splits["test"]["mean"]["student_auc"], last["test_aspect_auc"]
    assert (logged is None and math.isnan(auc)) or auc == pytest.approx(logged, abs=1e-5)
    assert splits["test"]["student_auc_questions"] == last["test_aspect_auc_questions"]
    assert splits["train"]["num_images"] == 24 and splits["test"]["num_images"] == 12
    saved = json.loads((finished_run / "aspect_metrics.json").read_text())
    assert saved["splits"]["test"]["questions"][0]["teacher_mean"] == pytest.approx(
        splits["test"]["questions"][0]["teacher_mean"]
    )


def test_plot_command_draws_every_figure_of_a_run(finished_run, capsys):
    out = finished_run / "figures"
    assert plot_tool.main([str(finished_run), str(finished_run), "--labels", "a,b", "--out", str(out)]) == 0
    for name in (
        "training_curves",
        "tsne_test",
        "question_correlation",
        "class_mean_answers",
        "aspect_agreement_train",
        "aspect_agreement_test",
    ):
        assert_png(out / f"{name}.png")
    points = list(csv.DictReader((out / "tsne_test.csv").open()))
    assert len(points) == 24 and {p["panel"].split(" ")[0] for p in points} == {"a", "b"}
    heat = json.loads((out / "class_mean_answers.json").read_text())
    assert len(heat["class_mean"]) == 3 and len(heat["class_mean"][0]) == 5
    assert heat["labels"] == ["q1", "q2", "q3", "q4", "q5"]  # the questions file's numbers, from 1
    bars = json.loads((out / "aspect_agreement_test.json").read_text())
    assert [(q["number"], q["label"]) for q in bars["questions"]] == [(n, f"q{n}") for n in range(1, 6)]
    assert plot_tool.main([str(finished_run), "--what", "bars"]) == 2
    assert "--what bars is unknown" in capsys.readouterr().err
