"""Figures of runs as they are: the curves of an unfinished run, the teacher's plots of a run without an aspect head
(or without a student yet), and a study's figures per seed, each saying which seed it shows."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from test_study import write_study
from tool_modules import load_tool

our_train, plot_tool, study_tool = load_tool("our_train"), load_tool("plot"), load_tool("study")
FAST = ["DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0", "NUM_THREADS", "1"]


def _train(release_dataset, name: str, *opts: str) -> int:
    out = release_dataset["root"] / name
    return our_train.main([str(release_dataset["config"]), *FAST, "OUTPUT_DIR", str(out), *opts])


def test_an_unfinished_run_gets_its_curves_and_the_teachers_plots(release_dataset, capsys):
    root = release_dataset["root"]
    assert _train(release_dataset, "stopped", "SOLVER.EPOCHS", "3", "--stop-after-epoch", "2") == 0
    capsys.readouterr()
    assert plot_tool.main([str(root / "stopped"), "--out", str(root / "figures")]) == 0
    printed = capsys.readouterr().out
    curves = json.loads((root / "figures" / "training_curves.json").read_text())
    (label,) = curves  # "stopped", its training-health marks if any (docs/health.md), then its progress
    assert label.startswith("stopped") and label.endswith(" (unfinished: 2 of 3 epochs)")
    assert [epoch for epoch, _ in curves[label]["train_loss"]] == [1, 2]
    assert f"t-SNE leaves out {label.removesuffix(' (unfinished: 2 of 3 epochs)')}: not finished" in printed
    assert "not finished (no student.pth): the teacher's plots only" in printed
    drawn = sorted(p.name for p in (root / "figures").glob("*.png"))
    assert drawn == ["class_mean_answers.png", "question_correlation.png", "training_curves.png"]
    # a run folder whose first epoch has not finished: said, and nothing drawn for it
    (root / "starting").mkdir()
    shutil.copy(root / "stopped" / "config.yaml", root / "starting" / "config.yaml")
    assert plot_tool.main([str(root / "starting"), "--what", "curves", "--out", str(root / "none")]) == 0
    assert "starting: no epoch finished yet (no metrics.jsonl); no curves" in capsys.readouterr().out


def test_a_run_without_an_aspect_head_gets_the_teachers_plots(release_dataset, capsys):
    root = release_dataset["root"]
    assert _train(release_dataset, "baseline", "SOLVER.EPOCHS", "1", "DISTILLER.TYPE", "NONE") == 0
    capsys.readouterr()
    assert plot_tool.main([str(root / "baseline"), "--what", "aspects", "--out", str(root / "figures")]) == 0
    assert "no aspect head (NONE): the teacher's plots only" in capsys.readouterr().out
    correlation = json.loads((root / "figures" / "question_correlation.json").read_text())
    assert correlation["labels"] == ["q1", "q2", "q3", "q4", "q5"] and correlation["num_images"] == 24
    teacher = json.loads(release_dataset["aspects"].read_text())
    means = json.loads((root / "figures" / "class_mean_answers.json").read_text())["class_mean"]
    first = [row for key, row in teacher.items() if key.startswith("Abyssinian_0_")]
    assert means[0][0] == pytest.approx(sum(r[0] for r in first) / len(first), abs=1e-6)
    assert not list((root / "figures").glob("aspect_agreement*"))


def test_study_figures_name_their_seed_and_can_show_every_seed(release_dataset, tmp_path, capsys):
    plots = {"curves": True, "aspects": "makd", "seeds": "all"}
    overrides = {"SOLVER.EPOCHS": 1, "DATASET.IMAGE_SIZE": 16, "DATASET.RESIZE_RATIO": 1.0}
    path = write_study(tmp_path, release_dataset["config"], plots=plots, overrides=overrides)
    assert study_tool.main([str(path)]) == 0
    printed = capsys.readouterr().out
    for seed in (0, 1):
        folder = tmp_path / "study" / "plots" / f"seed{seed}"
        assert f"[study] plots of seed {seed} in {folder}" in printed
        curves = json.loads((folder / "training_curves.json").read_text())
        labels = {label.split(" ⚠")[0]: label for label in curves}  # without the training-health marks, if any
        assert set(labels) == {f"baseline (seed {seed})", f"makd (seed {seed})"}
        logged = [json.loads(line) for line in (tmp_path / "study" / "makd" / f"seed{seed}" / "metrics.jsonl")
                  .read_text().splitlines()]  # fmt: skip
        assert curves[labels[f"makd (seed {seed})"]]["train_loss"] == [[1, pytest.approx(logged[0]["train_loss"])]]
        assert (folder / "aspect_agreement_train.png").exists()
    # redraw one seed only, from the finished runs
    assert study_tool.main([str(path), "--no-run", "--plot-seeds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "plots of seed 1" in printed and "plots of seed 0" not in printed
    spec = yaml.safe_load(path.read_text())
    spec["plots"]["seeds"] = [5]
    path.write_text(yaml.safe_dump(spec))
    assert study_tool.main([str(path), "--no-run"]) == 2
    assert "plots.seeds is [5]; use first, all, or a list of the study's seeds ([0, 1])" in capsys.readouterr().err


def test_a_baseline_naming_a_teacher_file_not_written_yet_still_finishes(release_dataset, capsys):
    """A starting config names stage 2's output before stage 2 ran; the CE baseline needs no teacher file."""
    missing = str(release_dataset["root"] / "not_yet.json")
    args = ["SOLVER.EPOCHS", "1", "DISTILLER.TYPE", "NONE", "DATASET.ASPECT_JSON", missing]
    assert _train(release_dataset, "early_baseline", *args) == 0
    run = release_dataset["root"] / "early_baseline"
    assert (run / "summary.json").exists() and (run / "student.pth").exists()
    assert not (run / "aspect_metrics.json").exists()
    assert "note: no aspect_metrics.json for this run without an aspect head: aspect file" in capsys.readouterr().err
