"""Training-health checks (issue 25): a run that learns nothing says so, in a warning line, summary.json, the
metrics rows and every table and plot of it; the checks change nothing in training; HEALTH.STOP_ON stops a run.

Real runs through tools/our_train.py on a small demo set: LaViD at lambda 10 and the demo's lr 0.05 (the collapse
the issue reports) against the cross-entropy baseline, which learns."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from tool_modules import load_tool

from makd.analysis.results_table import format_csv, format_markdown, format_runs_csv, summarise
from makd.analysis.run_folders import find_run_dirs, group_by_condition, read_run
from makd.analysis.run_health import MARK, brief, folder_findings, table_marks
from makd.analysis.run_plots import draw_all
from makd.config import load_cfg
from makd.demo.class_teacher import write_class_teacher
from makd.demo.classification import generate_demo
from makd.engine.health import chance_top1, label_entropy, map_zero_finding, zero_positives_finding
from makd.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
our_train = load_tool("our_train")
report = load_tool("report")
health_probe = load_tool("health_probe")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """16 classes x 16 training images at 32 px, with the simulated class-level teacher (16 questions)."""
    root = tmp_path_factory.mktemp("health") / "demo"
    generate_demo(root, train_per_class=16, test_per_class=2, seed=0)
    write_class_teacher(root, samples=4)
    return root


def _args(demo: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(REPO / "configs" / "demo" / "baseline.yaml"),
        *("DATASET.TRAIN_IMAGE_PATH", str(demo / "train"), "DATASET.TEST_IMAGE_PATH", str(demo / "test")),
        *("DATASET.ASPECT_JSON", "", "DATASET.TEST_ASPECT_JSON", "", "DATASET.QUESTIONS", ""),
        *("SOLVER.EPOCHS", "3", "SOLVER.BATCH_SIZE", "32", "NUM_THREADS", "1", "LOG.TENSORBOARD_FREQ", "0"),
        *("OUTPUT_DIR", str(out)),
        *extra,
    ]


def _lavid(demo: Path, lam: str = "10") -> list[str]:
    return ["DISTILLER.TYPE", "LaViD", "LaViD.CLASS_TARGETS", str(demo / "class_teacher.json"), "LaViD.LAMBDA", lam]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(demo, tmp_path_factory) -> dict[str, Path]:
    """The collapsed LaViD run (lambda 10, lr 0.05) and the baseline, 3 epochs each, with their stderr."""
    out = tmp_path_factory.mktemp("health_runs")
    made = {}
    for name, extra in (("lavid", _lavid(demo)), ("baseline", [])):
        assert our_train.main(_args(demo, out / name, *extra, "EXPERIMENT.NAME", name)) == 0
        made[name] = out / name
    return made


def test_label_entropy_and_chance_top1():
    assert label_entropy([5] * 16) == pytest.approx(math.log(16))
    assert label_entropy([90, 10]) == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)))
    assert label_entropy([3, 0, 3]) == pytest.approx(math.log(2))  # an empty class adds nothing
    # 1/16 + 3 sqrt(p (1 - p) / n) with n = 256: 6.25 % + 4.54 %
    assert chance_top1(1 / 16, 256) == pytest.approx(100 * (1 / 16 + 3 * math.sqrt(15 / 256 / 256)))


def test_collapsed_lavid_run_is_named_with_the_key_to_lower(runs, capsys):
    summary = json.loads((runs["lavid"] / "summary.json").read_text())
    health = summary["health"]
    assert health["checked"] is True
    checks = {f["check"]: f for f in health["findings"]}
    share = checks["gradient_share"]
    assert share["term"] == "loss_lavid" and share["key"] == "LaViD.LAMBDA" and share["epoch"] == 1
    assert share["numbers"]["ratio"] > 10 and share["step"] in (0, 1, 2, 4)
    assert share["numbers"]["ratio"] == pytest.approx(
        share["numbers"]["grad_norm"] / share["numbers"]["class_grad_norm"]
    )
    chance = checks["class_loss_at_chance"]
    assert chance["epoch"] == 2 and chance["key"] == "LaViD.LAMBDA"
    assert chance["numbers"]["ln_C"] == pytest.approx(math.log(16))
    assert chance["numbers"]["class_loss"] >= 0.99 * math.log(16)
    # the measured first steps: every term's size and gradient norm (8 steps per epoch: 0-4 in epoch 1)
    assert [m["step"] for m in health["first_steps"]] == [0, 1, 2, 4, 8, 16]
    assert set(health["first_steps"][0]["loss"]) == {"loss_ce", "loss_lavid"}
    assert health["measure_cpu_seconds"] > 0
    # the findings are in their epochs' metrics rows (kept by a resume), and the first steps in epoch 1's
    rows = _rows(runs["lavid"])
    assert [f["check"] for f in rows[0]["health"]] == ["gradient_share"]
    assert {f["check"] for f in rows[1]["health"]} >= {"class_loss_at_chance"}
    assert rows[0]["health_first_steps"] == health["first_steps"][:4]


def test_learning_baseline_has_no_finding(runs):
    health = json.loads((runs["baseline"] / "summary.json").read_text())["health"]
    assert health["checked"] is True and health["findings"] == []
    rows = _rows(runs["baseline"])
    assert rows[1]["train_loss_ce"] < 0.99 * math.log(16) and "health" not in rows[1]
    assert [m["step"] for m in health["first_steps"]] == [0, 1, 2, 4, 8, 16]
    assert set(health["first_steps"][0]["grad_norm"]) == {"loss_ce"}  # one term: nothing to compare


def test_report_and_plots_mark_the_collapsed_run(runs, tmp_path, capsys):
    assert (
        report.main([str(runs["lavid"]), str(runs["baseline"]), "--reference", "baseline", "--out", str(tmp_path)]) == 0
    )
    table = (tmp_path / "results.md").read_text()
    lavid_row = next(line for line in table.splitlines() if line.startswith("| lavid | 1 | 0 |"))
    assert lavid_row.split(" | ")[3:5] == [f"6.25 {MARK}1", f"6.25 {MARK}1"]  # its last and best test top-1, marked
    assert MARK not in next(line for line in table.splitlines() if line.startswith("| baseline |"))
    note = next(line for line in table.splitlines() if line.startswith(f"{MARK}1"))
    assert "**lavid**: 1 of 1 runs" in note and "class loss" in note and "at chance" in note and "loss_lavid" in note
    runs_csv = {row["condition"]: row for row in csv.DictReader((tmp_path / "runs.csv").open())}
    assert "class_loss_at_chance" in runs_csv["lavid"]["health_findings"].split(";")
    assert runs_csv["baseline"]["health_findings"] == ""
    results_csv = {row["condition"]: row for row in csv.DictReader((tmp_path / "results.csv").open())}
    assert results_csv["lavid"]["health_findings"].startswith("0:gradient_share;")
    # plots: the legend label says so (the numbers beside the PNG are keyed by label)
    draw_all(
        [runs["lavid"], runs["baseline"]], ["lavid", "baseline"], tmp_path / "plots", ["curves"], log=lambda _: None
    )
    labels = list(json.loads((tmp_path / "plots" / "training_curves.json").read_text()))
    assert labels[0].startswith(f"lavid {MARK} gradient_share") and labels[1] == "baseline"


def test_table_marks_count_runs_and_name_each_finding(runs):
    groups = group_by_condition([read_run(d) for d in find_run_dirs([runs["lavid"], runs["baseline"]])])
    rows, reference = summarise(groups, "baseline")
    marks, notes = table_marks(rows)
    assert marks == {"lavid": f" {MARK}1"} and len(notes) == 1
    assert format_markdown(rows, reference).count(MARK) == 3  # its last and best cells, and its note
    assert "health_findings" in format_csv(rows, reference).splitlines()[0]
    assert format_runs_csv(rows).splitlines()[0].endswith(",health_findings")
    assert brief({"check": "gradient_share", "term": "loss_x", "step": 2, "numbers": {"ratio": 42.4}}) == (
        "loss_x gradient 42x the class term's at step 2"
    )


def test_the_checks_change_nothing_in_training(demo, runs, tmp_path):
    off = tmp_path / "off"
    assert our_train.main(_args(demo, off, *_lavid(demo), "HEALTH.ENABLED", "False")) == 0
    summary = json.loads((off / "summary.json").read_text())
    assert summary["health"] == {"checked": False, "findings": [], "first_steps": [], "measure_seconds": 0,
                                 "measure_cpu_seconds": 0}  # fmt: skip
    on = json.loads((runs["lavid"] / "summary.json").read_text())
    assert summary["test_top1_last"] == on["test_top1_last"]
    for a, b in zip(_rows(off), _rows(runs["lavid"])):
        assert a["train_loss"] == b["train_loss"] and a["test_loss"] == b["test_loss"]
    weights_off = torch.load(off / "student.pth", weights_only=False)["model"]
    weights_on = torch.load(runs["lavid"] / "student.pth", weights_only=False)["model"]
    assert all(torch.equal(weights_off[k], weights_on[k]) for k in weights_on)


def test_stop_on_a_finding_is_one_line_and_keeps_the_saved_epochs(demo, tmp_path, capsys):
    out = tmp_path / "stop"
    code = our_train.main(_args(demo, out, *_lavid(demo), "HEALTH.STOP_ON", "[class_loss_at_chance]"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: training-health finding class_loss_at_chance stops the run")
    assert "the epoch's latest.pth is kept" in err[-1]
    assert (out / "latest.pth").exists() and not (out / "summary.json").exists()
    assert [r["epoch"] for r in _rows(out)] == [1, 2]  # stopped after epoch 2, its row (with the finding) saved
    assert {f["check"] for f in folder_findings(out)} >= {"gradient_share", "class_loss_at_chance"}
    # a first-steps finding stops in epoch 1, before any checkpoint
    early = tmp_path / "early"
    assert our_train.main(_args(demo, early, *_lavid(demo), "HEALTH.STOP_ON", "[any]")) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "gradient_share" in line and "LaViD.LAMBDA" in line and "no checkpoint of this epoch" in line
    assert not (early / "latest.pth").exists()


def test_resume_keeps_the_findings_and_reports_each_once(demo, runs, tmp_path, capsys):
    out = tmp_path / "resumed"
    assert our_train.main([*_args(demo, out, *_lavid(demo)), "--stop-after-epoch", "1"]) == 0
    capsys.readouterr()
    assert our_train.main([*_args(demo, out, *_lavid(demo), "HEALTH.GRAD_FACTOR", "5"), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "gradient_share" not in err and "step " not in err  # measured and reported before the resume
    resumed = json.loads((out / "summary.json").read_text())["health"]
    unbroken = json.loads((runs["lavid"] / "summary.json").read_text())["health"]
    assert [f["check"] for f in resumed["findings"]] == [f["check"] for f in unbroken["findings"]]
    assert [m["loss"] for m in resumed["first_steps"]] == [m["loss"] for m in unbroken["first_steps"]]


def test_health_keys_are_checked_on_load():
    with pytest.raises(ConfigError, match="HEALTH.STOP_ON names 'nan_loss'"):
        load_cfg(None, ["HEALTH.STOP_ON", "[nan_loss]"])
    with pytest.raises(ConfigError, match="HEALTH.GRAD_STEPS"):
        load_cfg(None, ["HEALTH.GRAD_STEPS", "[-1]"])
    with pytest.raises(ConfigError, match="HEALTH.FLAT_EPOCHS must be >= 2"):
        load_cfg(None, ["HEALTH.FLAT_EPOCHS", "1"])


def test_probe_measures_the_steps_the_run_takes(demo, runs, capsys):
    assert health_probe.main([*_args(demo, Path("unused"), *_lavid(demo)), "--steps", "5", "--json"]) == 0
    probe = json.loads(capsys.readouterr().out)
    run = json.loads((runs["lavid"] / "summary.json").read_text())["health"]["first_steps"]
    by_step = {m["step"]: m for m in probe["steps"]}
    assert sorted(by_step) == [0, 1, 2, 3, 4] and probe["steps_per_epoch"] == 8
    for measured in run[:4]:  # steps 0, 1, 2, 4; the same seeds, data order and updates: the run's numbers
        assert by_step[measured["step"]]["loss"] == pytest.approx(measured["loss"], rel=1e-5)
        assert by_step[measured["step"]]["grad_norm"] == pytest.approx(measured["grad_norm"], rel=1e-4)
    assert probe["findings"][0]["check"] == "gradient_share"
    assert not Path("unused").exists()  # no run folder


def test_detection_runs_measure_the_classifier_term_and_name_a_detector_without_boxes(tmp_path):
    """A detection run measures its first steps against loss_classifier and finds nothing on the demo's boxes. A
    training file without a usable box (all crowd regions, say) is refused by the COCO reader, so zero positives and an
    mAP stuck at 0 are checked on the epoch's numbers the task counts (positive proposals the box head sampled)."""
    from makd.demo.detection import generate_detection_demo

    demo = tmp_path / "det"
    generate_detection_demo(demo, num_train=8, num_test=4, seed=3)
    out = tmp_path / "boxes"
    args = [str(REPO / "configs" / "demo_detection" / "baseline.yaml"), "OUTPUT_DIR", str(out)]
    args += ["DATASET.TRAIN_IMAGE_PATH", str(demo / "train"), "DATASET.TEST_IMAGE_PATH", str(demo / "test")]
    args += ["DETECTION.TRAIN_JSON", str(demo / "instances_train.json"), "DETECTION.TEST_JSON"]
    args += [str(demo / "instances_test.json"), "DATASET.ASPECT_JSON", "", "DATASET.TEST_ASPECT_JSON", ""]
    args += ["DATASET.QUESTIONS", "", "SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "4", "SOLVER.WARMUP_EPOCHS", "0"]
    assert our_train.main(args) == 0
    health = json.loads((out / "summary.json").read_text())["health"]
    assert [m["class_terms"] for m in health["first_steps"]] == ["loss_classifier"] * 2  # 2 steps per epoch
    assert set(health["first_steps"][0]["loss"]) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    assert list(health["first_steps"][0]["grad_norm"]) == ["loss_classifier"]  # the detector's own terms not compared
    assert health["findings"] == []
    # the epoch's numbers: a box head that sampled no positive proposal, then two evaluations at mAP 0
    zero = zero_positives_finding(1, {"positive_samples": 0.0, "gt_boxes": 0.0, "images": 8.0})
    assert zero.check == "zero_positives" and zero.key == "DETECTION.TRAIN_JSON" and "8 training images" in zero.message
    assert zero_positives_finding(1, {"positive_samples": 37.0, "gt_boxes": 20.0, "images": 8.0}) is None
    rows = [{"epoch": 1, "test_map": 0.0}, {"epoch": 2, "test_map": 0.0}]
    stuck = map_zero_finding(2, rows, after_epochs=2)
    assert stuck.check == "map_zero" and stuck.numbers == {"test_map": 0.0, "evaluations": 2.0}
    assert map_zero_finding(1, rows[:1], after_epochs=2) is None  # before HEALTH.AFTER_EPOCHS
    assert map_zero_finding(2, [rows[0], {"epoch": 2, "test_map": 0.4}], after_epochs=2) is None


def test_a_learning_rate_that_moves_nothing_gives_a_flat_loss(demo, tmp_path):
    """SOLVER.LR 1e-8 (a typo's size) at a constant schedule, without augmentation: the epoch's loss repeats itself.

    One batch of all 256 training images: with smaller shuffled batches the BatchNorm statistics of each batch
    move the epoch's mean loss by ~0.25 % even when the weights do not move."""
    out = tmp_path / "flat"
    fixed = ["SOLVER.LR", "1e-8", "SOLVER.SCHEDULER", "multistep", "DATASET.AUGMENT.CROP", "resize"]
    fixed += ["SOLVER.BATCH_SIZE", "256"]
    assert our_train.main(_args(demo, out, *fixed, "DATASET.AUGMENT.HFLIP", "False")) == 0
    found = {f["check"]: f for f in json.loads((out / "summary.json").read_text())["health"]["findings"]}
    flat = found["loss_flat"]
    assert flat["epoch"] == 3 and flat["numbers"]["relative_spread"] < 0.002 and flat["key"] == "SOLVER.LR"
    losses = [row["train_loss"] for row in _rows(out)]
    assert (max(losses) - min(losses)) / (sum(losses) / 3) == pytest.approx(flat["numbers"]["relative_spread"])
    assert found["class_loss_at_chance"]["epoch"] == 2  # the untrained student is at chance too
