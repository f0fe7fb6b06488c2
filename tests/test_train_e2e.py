"""End to end through tools/our_train.py's main: the official release layout, outputs, exact resume,
non-finite loss, evaluation of a saved student, and a real 2-process torch.distributed run on CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from tool_modules import load_tool, run_on_two_processes

from makd.formats.files import sha256_file

REPO = Path(__file__).resolve().parents[1]
FAST = ["DATASET.IMAGE_SIZE", "32", "DATASET.RESIZE_RATIO", "1.0"]
METRIC_KEYS = ("test_top1_last", "test_top1_best", "best_epoch", "test_top5_last", "test_aspect_mae_last")


our_train = load_tool("our_train")


def run_dir(release_dataset, name: str = "release") -> Path:
    return release_dataset["root"] / "output" / "tiny" / name


def test_official_release_layout_trains_from_official_yaml(release_dataset):
    assert our_train.main([str(release_dataset["config"]), *FAST]) == 0
    out = run_dir(release_dataset)
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "test_top1_last",
        "test_top1_best",
        "best_epoch",
        "test_top5_last",
        "epochs",
        "num_classes",
        "num_aspects",
        "student",
        "distiller",
        "seed",
        "aspect_sha256",
    ):
        assert key in summary, key
    assert (summary["num_classes"], summary["num_aspects"], summary["epochs"]) == (3, 5, 3)
    assert summary["aspect_sha256"] == sha256_file(release_dataset["aspects"])
    assert summary["num_train_images"] == 24 and summary["num_test_images"] == 12
    assert 0.0 <= summary["test_top1_last"] <= summary["test_top1_best"] <= 100.0
    assert summary["test_top5_last"] == 100.0  # C = 3 <= 5
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["test_num_samples"] == 12 for r in rows)
    # LR_DECAY_STAGES [2]: epochs 1 and 2 train at 0.05, epoch 3 at 0.005 (the rate each epoch used, not the one the
    # scheduler holds after its last step)
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.05, 0.005])
    for name in ("latest.pth", "best.pth", "epoch_2.pth", "student.pth", "config.yaml"):
        assert (out / name).exists(), name
    # per-question metrics of the final student against the teacher's training rows (evaluation view)
    metrics = json.loads((out / "aspect_metrics.json").read_text())["splits"]["train"]
    assert [q["number"] for q in metrics["questions"]] == [1, 2, 3, 4, 5]  # counted from 1, as the questions file
    teacher = json.loads(release_dataset["aspects"].read_text())
    first_mean = sum(row[0] for row in teacher.values()) / len(teacher)
    assert metrics["questions"][0]["teacher_mean"] == pytest.approx(first_mean, abs=1e-6)
    assert all(0.0 <= q["student_mae"] <= 1.0 for q in metrics["questions"])
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    export = torch.load(out / "student.pth", weights_only=False)
    assert export["num_outputs"] == 3 + 5 and export["class_names"] == sorted(
        release_dataset["classes"], key=lambda c: release_dataset["classes"].index(c)
    )

    # Scoring the saved best checkpoint reproduces the epoch's test top-1.
    best = summary["best_epoch"]
    evaluated = load_tool("eval")
    result_path = out / "eval.json"
    with open(result_path, "w") as fh:
        old, sys.stdout = sys.stdout, fh
        try:
            assert evaluated.main([str(release_dataset["config"]), str(out / "best.pth"), "--json", *FAST]) == 0
        finally:
            sys.stdout = old
    result = json.loads(result_path.read_text())
    assert result["top1"] == pytest.approx(rows[best - 1]["test_top1"]) and result["num_samples"] == 12

    # A second run into the same folder must not clobber the first.
    assert our_train.main([str(release_dataset["config"]), *FAST]) == 2


def _metrics(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {k: summary[k] for k in METRIC_KEYS}


def test_resume_reproduces_an_unbroken_run_exactly(release_dataset, capsys):
    config = str(release_dataset["config"])
    common = [
        *FAST,
        "DATASET.NUM_WORKERS",
        "2",
        "SOLVER.EPOCHS",
        "3",
        "DATASET.TEST_ASPECT_JSON",
        str(release_dataset["test_aspects"]),
    ]
    assert our_train.main([config, *common, "OUTPUT_DIR", str(release_dataset["root"] / "unbroken")]) == 0
    broken = release_dataset["root"] / "broken"
    assert our_train.main([config, *common, "OUTPUT_DIR", str(broken), "--stop-after-epoch", "1"]) == 0
    assert not (broken / "summary.json").exists()
    state = torch.load(broken / "latest.pth", weights_only=False)
    assert state["epoch"] == 1
    # Continue from the layout makd 0.1 wrote (student weights under "model", no distiller extras, no step).
    old_layout = {k: v for k, v in state.items() if k not in ("distiller_extra", "step", "distiller", "makd_version")}
    torch.save(old_layout, broken / "latest.pth")
    # Resuming with a different training setting is refused, naming the key.
    assert our_train.main([config, "--resume", *common, "OUTPUT_DIR", str(broken), "SOLVER.LR", "0.1"]) == 2
    assert "SOLVER.LR" in capsys.readouterr().err
    assert our_train.main([config, "--resume", *common, "OUTPUT_DIR", str(broken)]) == 0
    assert _metrics(broken) == _metrics(release_dataset["root"] / "unbroken")
    a = torch.load(broken / "student.pth", weights_only=False)["model"]
    b = torch.load(release_dataset["root"] / "unbroken" / "student.pth", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (broken / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(release_dataset, capsys):
    out = release_dataset["root"] / "exploding"
    # Epoch 1 trains normally; from epoch 2 the learning rate is 1e20 and the loss overflows.
    code = our_train.main(
        [
            str(release_dataset["config"]),
            *FAST,
            "SOLVER.LR_DECAY_STAGES",
            "[1]",
            "SOLVER.LR_DECAY_RATE",
            "1e22",
            "OUTPUT_DIR",
            str(out),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 2" in err and "loss_ce" in err and "loss_aspect" in err
    state = torch.load(out / "latest.pth", weights_only=False)
    assert state["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
    )


def test_baseline_needs_no_aspect_file(release_dataset):
    out = release_dataset["root"] / "baseline"
    code = our_train.main(
        [
            str(release_dataset["config"]),
            *FAST,
            "DISTILLER.TYPE",
            "NONE",
            "DATASET.ASPECT_JSON",
            "",
            "SOLVER.EPOCHS",
            "1",
            "OUTPUT_DIR",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_aspects"] == 0 and summary["distiller"] == "NONE" and summary["aspect_sha256"] is None
    assert torch.load(out / "student.pth", weights_only=False)["num_outputs"] == 3


def test_count_mismatches_fail_in_one_line(release_dataset, capsys):
    config = str(release_dataset["config"])
    assert (
        our_train.main([config, *FAST, "MaKD.ASPECT_NUM", "7", "OUTPUT_DIR", str(release_dataset["root"] / "a")]) == 2
    )
    assert "MaKD.ASPECT_NUM" in capsys.readouterr().err
    assert (
        our_train.main([config, *FAST, "DATASET.NUM_CLASS", "5", "OUTPUT_DIR", str(release_dataset["root"] / "b")]) == 2
    )
    err = capsys.readouterr().err
    assert "DATASET.NUM_CLASS" in err and len(err.strip().splitlines()) == 1


def test_two_process_distributed_run_on_cpu(release_dataset):
    out = release_dataset["root"] / "ddp"
    args = [release_dataset["config"], *FAST, "SOLVER.EPOCHS", "2", "OUTPUT_DIR", out]
    proc = run_on_two_processes("our_train", args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["num_test_images"] == 12
    assert [m["step"] for m in summary["health"]["first_steps"]][:2] == [0, 1]  # measured under DDP, both ranks
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["test_num_samples"] for r in rows] == [12, 12]  # each test image counted exactly once


def test_wandb_on_without_wandb_installed_is_a_clear_error(release_dataset, capsys):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    out = release_dataset["root"] / "wandb"
    assert our_train.main([str(release_dataset["config"]), *FAST, "LOG.WANDB", "True", "OUTPUT_DIR", str(out)]) == 2
    assert "LOG.WANDB is on but wandb is not installed" in capsys.readouterr().err
